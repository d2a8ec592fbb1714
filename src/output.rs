//! Output of the CLIs as the aws CLI prints it: json, text or table, dates
//! as RFC 3339, and a small `--query`.

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

/// A small subset of `--query`: a dotted path of field names and indexes
/// (`KeyMetadata.Arn`, `Keys[0].KeyId`).
pub fn query(v: &Value, q: &str) -> Result<Value, String> {
    let mut cur = v.clone();
    for part in q.split('.') {
        let (name, idx) = match part.split_once('[') {
            Some((n, rest)) => (n, Some(rest.trim_end_matches(']'))),
            None => (part, None),
        };
        if !name.is_empty() {
            cur = cur.get(name).cloned().unwrap_or(Value::Null);
        }
        if let Some(i) = idx {
            let i: usize = i
                .parse()
                .map_err(|_| format!("--query: bad index in '{part}'"))?;
            cur = cur.get(i).cloned().unwrap_or(Value::Null);
        }
    }
    Ok(cur)
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
/// `--query` path applied, in `json`, `text` or `table` form.
pub fn render(mut v: Value, output: &str, q: Option<&str>) -> Result<Vec<String>, String> {
    humanize_times(&mut v);
    if let Some(q) = q {
        v = query(&v, q)?;
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
