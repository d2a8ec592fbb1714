//! Output of the CLIs as the aws CLI prints it: json, text or table, dates
//! as RFC 3339, and `--query` as a JMESPath expression.

use serde_json::Value;

/// Renders epoch-second timestamp fields as RFC 3339, as the aws CLI prints them.
pub fn humanize_times(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if crate::kms::api::TIMESTAMP_FIELDS.contains(&k.as_str()) {
                    if let Some(t) = val.as_i64() {
                        *val = Value::String(crate::clock::to_rfc3339(t));
                        continue;
                    }
                }
                humanize_times(val);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(humanize_times),
        _ => {}
    }
}

/// A `--query`: a JMESPath expression, the aws CLI's query language
/// (projections, filters, multiselect, pipes, functions), parsed and checked
/// before any request runs so that a bad expression changes nothing.
pub struct Query {
    expr: jmespath::Expression<'static>,
}

impl std::fmt::Debug for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Query").field(&self.expr.as_str()).finish()
    }
}

/// The builtin functions of JMESPath with their arity (fixed count, or a
/// minimum for the variadic ones), as the specification lists them.
const FUNCTIONS: &[(&str, usize, bool)] = &[
    ("abs", 1, false),
    ("avg", 1, false),
    ("ceil", 1, false),
    ("contains", 2, false),
    ("ends_with", 2, false),
    ("floor", 1, false),
    ("join", 2, false),
    ("keys", 1, false),
    ("length", 1, false),
    ("map", 2, false),
    ("max", 1, false),
    ("max_by", 2, false),
    ("merge", 1, true),
    ("min", 1, false),
    ("min_by", 2, false),
    ("not_null", 1, true),
    ("reverse", 1, false),
    ("sort", 1, false),
    ("sort_by", 2, false),
    ("starts_with", 2, false),
    ("sum", 1, false),
    ("to_array", 1, false),
    ("to_number", 1, false),
    ("to_string", 1, false),
    ("type", 1, false),
    ("values", 1, false),
];

/// Refuses calls of unknown functions and calls with the wrong number of
/// arguments: the JMESPath parser leaves both to evaluation time, after
/// the request would have run.
fn check_functions(ast: &jmespath::ast::Ast) -> Result<(), String> {
    use jmespath::ast::Ast;
    match ast {
        Ast::Function { name, args, .. } => {
            let Some(&(_, n, variadic)) = FUNCTIONS.iter().find(|(f, _, _)| f == name) else {
                return Err(format!("unknown function {name}()"));
            };
            let ok = if variadic {
                args.len() >= n
            } else {
                args.len() == n
            };
            if !ok {
                return Err(format!(
                    "{name}() takes {}{n} argument{}, not {}",
                    if variadic { "at least " } else { "" },
                    if n == 1 { "" } else { "s" },
                    args.len()
                ));
            }
            args.iter().try_for_each(check_functions)
        }
        Ast::Comparison { lhs, rhs, .. }
        | Ast::Projection { lhs, rhs, .. }
        | Ast::And { lhs, rhs, .. }
        | Ast::Or { lhs, rhs, .. }
        | Ast::Subexpr { lhs, rhs, .. } => {
            check_functions(lhs)?;
            check_functions(rhs)
        }
        Ast::Condition {
            predicate, then, ..
        } => {
            check_functions(predicate)?;
            check_functions(then)
        }
        Ast::Expref { ast, .. } => check_functions(ast),
        Ast::Flatten { node, .. } | Ast::Not { node, .. } | Ast::ObjectValues { node, .. } => {
            check_functions(node)
        }
        Ast::MultiList { elements, .. } => elements.iter().try_for_each(check_functions),
        Ast::MultiHash { elements, .. } => elements
            .iter()
            .try_for_each(|kv| check_functions(&kv.value)),
        Ast::Identity { .. }
        | Ast::Field { .. }
        | Ast::Index { .. }
        | Ast::Literal { .. }
        | Ast::Slice { .. } => Ok(()),
    }
}

impl Query {
    /// Parses a `--query` expression. The error names the expression and
    /// what is wrong with it (the caller reports it as a usage error).
    pub fn parse(q: &str) -> Result<Query, String> {
        let bad = |why: String| format!("Bad value for --query {q}: {why}");
        let expr = jmespath::compile(q).map_err(|e| {
            bad(format!(
                "{} (at character {})",
                e.reason,
                e.column.saturating_add(1)
            ))
        })?;
        check_functions(expr.as_ast()).map_err(bad)?;
        Ok(Query { expr })
    }

    /// Applies the expression to a response. Fails only where evaluation
    /// does (a function given a value of the wrong type, a zero slice step).
    pub fn apply(&self, v: &Value) -> Result<Value, String> {
        let found = self.expr.search(v).map_err(|e| {
            format!(
                "--query {}: {} (at character {})",
                self.expr.as_str(),
                e.reason,
                e.column.saturating_add(1)
            )
        })?;
        serde_json::to_value(&*found).map_err(|e| format!("--query result: {e}"))
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

fn table_lines(v: &Value, indent: usize, out: &mut Vec<String>) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if x.is_object() || x.is_array() {
                    out.push(format!("{pad}{k}:"));
                    table_lines(x, indent + 2, out);
                } else {
                    out.push(format!("{pad}{k:<32} {}", scalar(x)));
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                out.push(format!("{pad}[{i}]"));
                table_lines(x, indent + 2, out);
            }
        }
        other => out.push(format!("{pad}{}", scalar(other))),
    }
}

/// Renders a response for the terminal: timestamps as RFC 3339, the
/// `--query` expression applied, in `json`, `text` or `table` form.
pub fn render(mut v: Value, output: &str, q: Option<&Query>) -> Result<Vec<String>, String> {
    humanize_times(&mut v);
    if let Some(q) = q {
        v = q.apply(&v)?;
    }
    Ok(match output {
        "json" => vec![serde_json::to_string_pretty(&v).unwrap_or_default()],
        "text" => crate::output_text::lines(&v),
        "table" => {
            let mut lines = Vec::new();
            table_lines(&v, 0, &mut lines);
            lines
        }
        other => return Err(format!("--output {other}: expected json, text or table")),
    })
}

/// Prints rendered lines to stdout. A closed pipe (`... | head`) is not an
/// error of the command: printing stops quietly.
pub fn print_lines(lines: &[String]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for l in lines {
        if writeln!(out, "{l}").is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_is_checked_before_it_runs() {
        for bad in [
            "Keys[",
            "Keys[?",
            "a.b.",
            "nope(@)",
            "length()",
            "length(@, @)",
            "Keys[?contains(KeyId)]",
            "sort_by(Keys)",
            "merge()",
            "{a: not_null()}",
            "[Keys, max_by(Keys, &KeyId, @)]",
        ] {
            let e = Query::parse(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("Bad value for --query {bad}: ")),
                "{e}"
            );
        }
        for good in [
            "Keys[*].KeyId",
            "merge(a, b, c)",
            "not_null(a, b)",
            "Keys[?starts_with(KeyId, 'x')] | length(@)",
            "{n: length(Keys), first: Keys[0]}",
        ] {
            Query::parse(good).unwrap();
        }
    }

    #[test]
    fn query_selects_as_jmespath_does() {
        let v = json!({"Keys": [{"KeyId": "b", "N": 2}, {"KeyId": "a", "N": 1}, {"KeyId": "c", "N": 3}]});
        let q = |e: &str| Query::parse(e).unwrap().apply(&v).unwrap();
        assert_eq!(q("Keys[?N > `1`].KeyId"), json!(["b", "c"]));
        assert_eq!(q("Keys[?KeyId=='a'] | length(@)"), json!(1));
        assert_eq!(q("sort_by(Keys, &N)[-1].KeyId"), json!("c"));
        assert_eq!(
            q("Keys[0].{Id: KeyId, Twice: [N, N]}"),
            json!({"Id": "b", "Twice": [2, 2]})
        );
        assert_eq!(q("sum(Keys[*].N)"), json!(6.0));
        assert_eq!(q("Missing.Field"), Value::Null);
        // A type error shows only when evaluated, and names the query.
        let e = Query::parse("length(Keys[0].N)")
            .unwrap()
            .apply(&v)
            .unwrap_err();
        assert!(e.starts_with("--query length(Keys[0].N): "), "{e}");
    }

    #[test]
    fn text_output_of_a_query_result() {
        let v = json!({"Keys": [{"KeyId": "b"}, {"KeyId": "a"}]});
        let q = Query::parse("sort(Keys[*].KeyId)").unwrap();
        assert_eq!(render(v.clone(), "text", Some(&q)).unwrap(), vec!["a\tb"]);
        let q = Query::parse("Keys[*].KeyId | [0]").unwrap();
        assert_eq!(render(v, "text", Some(&q)).unwrap(), vec!["b"]);
    }
}
