//! `--output text` exactly as the aws CLI prints it (its `awscli/text.py`):
//! tab-separated scalars; a dict prints its scalar values (keys sorted) on
//! one line, then each list or dict value under its key as identifier; a
//! list of dicts prints one row per dict over the union of their scalar
//! keys (sorted, missing ones empty) with the key upper-cased in front; a
//! list of scalars under a key prints one `KEY\tvalue` line per element.

use serde_json::Value;

/// The lines of `v` as `aws --output text` prints them.
pub fn lines(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    format(v, None, None, &mut out);
    out
}

fn format(
    item: &Value,
    identifier: Option<&str>,
    scalar_keys: Option<&[String]>,
    out: &mut Vec<String>,
) {
    match item {
        Value::Object(_) => format_dict(scalar_keys, item, identifier, out),
        Value::Array(a) => format_list(a, identifier, out),
        other => out.push(py_str(other)),
    }
}

fn is_container(v: &Value) -> bool {
    v.is_object() || v.is_array()
}

fn format_list(items: &[Value], identifier: Option<&str>, out: &mut Vec<String>) {
    if items.is_empty() {
        return;
    }
    if items.iter().any(Value::is_object) {
        let keys = all_scalar_keys(items);
        for el in items {
            format(el, identifier, Some(&keys), out);
        }
    } else if items.iter().any(Value::is_array) {
        let (scalars, non_scalars): (Vec<&Value>, Vec<&Value>) =
            items.iter().partition(|el| !is_container(el));
        if !scalars.is_empty() {
            format_scalar_list(&scalars, identifier, out);
        }
        for el in non_scalars {
            format(el, identifier, None, out);
        }
    } else {
        let all: Vec<&Value> = items.iter().collect();
        format_scalar_list(&all, identifier, out);
    }
}

fn format_scalar_list(items: &[&Value], identifier: Option<&str>, out: &mut Vec<String>) {
    match identifier {
        Some(id) => {
            for el in items {
                out.push(format!("{}\t{}", id.to_uppercase(), py_str(el)));
            }
        }
        None => out.push(
            items
                .iter()
                .map(|el| py_str(el))
                .collect::<Vec<_>>()
                .join("\t"),
        ),
    }
}

fn format_dict(
    scalar_keys: Option<&[String]>,
    item: &Value,
    identifier: Option<&str>,
    out: &mut Vec<String>,
) {
    let Some(map) = item.as_object() else {
        return;
    };
    let mut sorted: Vec<(&String, &Value)> = map.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut scalars: Vec<String> = Vec::new();
    let mut non_scalars: Vec<(&String, &Value)> = Vec::new();
    match scalar_keys {
        None => {
            for (k, v) in sorted {
                if is_container(v) {
                    non_scalars.push((k, v));
                } else {
                    scalars.push(py_str(v));
                }
            }
        }
        Some(keys) => {
            for k in keys {
                scalars.push(map.get(k).map(py_str).unwrap_or_default());
            }
            for (k, v) in sorted {
                if !keys.contains(k) {
                    non_scalars.push((k, v));
                }
            }
        }
    }
    if !scalars.is_empty() {
        if let Some(id) = identifier {
            scalars.insert(0, id.to_uppercase());
        }
        out.push(scalars.join("\t"));
    }
    for (k, v) in non_scalars {
        format(v, Some(k), None, out);
    }
}

fn all_scalar_keys(items: &[Value]) -> Vec<String> {
    let mut keys: Vec<String> = items
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|m| {
            m.iter()
                .filter(|(_, v)| !is_container(v))
                .map(|(k, _)| k.clone())
        })
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Python's `str()` of a decoded JSON value: strings as they are, `True`,
/// `False`, `None`, and containers in Python's repr.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => py_repr_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        // Python keeps the JSON document's key order; serde_json's map is
        // sorted, as are the keys of every response this crate makes.
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", py_repr_str(k), py_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_like_the_aws_cli() {
        let v = json!({"Volumes": [
            {"VolumeId": "vol-1", "Size": 1, "Attachments": [{"Device": "/d", "State": "attached"}]},
            {"VolumeId": "vol-2", "Encrypted": true, "Attachments": []}
        ], "NextToken": null});
        assert_eq!(
            lines(&v),
            vec![
                "None",
                "VOLUMES\t\t1\tvol-1",
                "ATTACHMENTS\t/d\tattached",
                "VOLUMES\tTrue\t\tvol-2",
            ]
        );
        assert_eq!(lines(&json!({"KeyId": "k"})), vec!["k"]);
        assert_eq!(lines(&json!(["a", "b"])), vec!["a\tb"]);
        assert_eq!(
            lines(&json!({"Ops": ["Encrypt", "Decrypt"]})),
            vec!["OPS\tEncrypt", "OPS\tDecrypt"]
        );
    }
}
