//! botocore's service models as the spec: load a model from the venv that
//! scripts/setup.sh installs and check a JSON response against an
//! operation's output shape (members, required members, types, enums).
#![allow(dead_code)]

use serde_json::Value;

/// A botocore service model (`service-2.json`).
pub struct Model {
    pub json: Value,
}

impl Model {
    /// Loads `service` (`kms`, `ec2`, `ebs`, `sts`) through botocore itself,
    /// so the model is the one the aws CLI and boto3 use. A missing venv is
    /// a failure, not a skip.
    pub fn load(service: &str) -> Model {
        let script = format!(
            "import botocore.session,json,sys;\
             s=botocore.session.get_session();\
             json.dump(s.get_component('data_loader').load_service_model('{service}','service-2'),sys.stdout)"
        );
        let out = std::process::Command::new(super::serve::python())
            .args(["-c", &script])
            .output()
            .expect("the keyvol venv's python (run scripts/setup.sh)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Model {
            json: serde_json::from_slice(&out.stdout).unwrap(),
        }
    }

    pub fn operations(&self) -> Vec<String> {
        self.json["operations"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    /// The error shape names an operation declares.
    pub fn errors(&self, op: &str) -> Vec<String> {
        self.json["operations"][op]["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["shape"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every problem of `response` against `op`'s output shape; empty when
    /// it conforms.
    pub fn check_output(&self, op: &str, response: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        match self.json["operations"][op]["output"]["shape"].as_str() {
            Some(shape) => self.check(shape, response, op, &mut problems),
            None => {
                if response.as_object().is_some_and(|o| !o.is_empty()) {
                    problems.push(format!("{op}: the model has no output, got {response}"));
                }
            }
        }
        problems
    }

    fn check(&self, shape_name: &str, v: &Value, path: &str, out: &mut Vec<String>) {
        let shape = &self.json["shapes"][shape_name];
        let ty = shape["type"].as_str().unwrap_or("?");
        match ty {
            "structure" => {
                let Some(obj) = v.as_object() else {
                    out.push(format!(
                        "{path}: expected an object ({shape_name}), got {v}"
                    ));
                    return;
                };
                let members = shape["members"].as_object().cloned().unwrap_or_default();
                for (k, val) in obj {
                    match members.get(k) {
                        Some(m) => {
                            let s = m["shape"].as_str().unwrap_or_default();
                            self.check(s, val, &format!("{path}.{k}"), out);
                        }
                        None => out.push(format!("{path}.{k}: not a member of {shape_name}")),
                    }
                }
                for r in shape["required"].as_array().into_iter().flatten() {
                    let r = r.as_str().unwrap_or_default();
                    if !obj.contains_key(r) {
                        out.push(format!(
                            "{path}: required member {r} of {shape_name} missing"
                        ));
                    }
                }
            }
            "list" => {
                let Some(items) = v.as_array() else {
                    out.push(format!("{path}: expected a list ({shape_name}), got {v}"));
                    return;
                };
                let member = shape["member"]["shape"].as_str().unwrap_or_default();
                for (i, item) in items.iter().enumerate() {
                    self.check(member, item, &format!("{path}[{i}]"), out);
                }
            }
            "map" => {
                let Some(obj) = v.as_object() else {
                    out.push(format!("{path}: expected a map ({shape_name}), got {v}"));
                    return;
                };
                let value = shape["value"]["shape"].as_str().unwrap_or_default();
                for (k, val) in obj {
                    self.check(value, val, &format!("{path}[{k}]"), out);
                }
            }
            "string" => match v.as_str() {
                None => out.push(format!("{path}: expected a string ({shape_name}), got {v}")),
                Some(s) => {
                    if let Some(values) = shape["enum"].as_array() {
                        if !values.iter().any(|e| e.as_str() == Some(s)) {
                            out.push(format!("{path}: '{s}' is not in enum {shape_name}"));
                        }
                    }
                }
            },
            "blob" => {
                let ok = v.as_str().is_some_and(|s| {
                    use base64::Engine;
                    base64::engine::general_purpose::STANDARD.decode(s).is_ok()
                });
                if !ok {
                    out.push(format!("{path}: expected a base64 blob, got {v}"));
                }
            }
            "integer" | "long" => {
                if !(v.is_i64() || v.is_u64()) {
                    out.push(format!(
                        "{path}: expected an integer ({shape_name}), got {v}"
                    ));
                }
            }
            "boolean" => {
                if !v.is_boolean() {
                    out.push(format!(
                        "{path}: expected a boolean ({shape_name}), got {v}"
                    ));
                }
            }
            "timestamp" => {
                if !v.is_number() {
                    out.push(format!(
                        "{path}: expected epoch seconds ({shape_name}), got {v}"
                    ));
                }
            }
            "double" | "float" => {
                if !v.is_number() {
                    out.push(format!("{path}: expected a number ({shape_name}), got {v}"));
                }
            }
            other => out.push(format!(
                "{path}: unhandled shape type {other} ({shape_name})"
            )),
        }
    }
}
