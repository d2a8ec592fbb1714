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

    /// Every problem of `v` against the shape `shape` (an error shape,
    /// say); empty when it conforms.
    pub fn check_shape(&self, shape: &str, v: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        self.check(shape, v, shape, &mut problems);
        problems
    }

    /// The wire names of `op`'s output members sent as HTTP headers
    /// (REST protocols), lowercased.
    pub fn output_headers(&self, op: &str) -> Vec<String> {
        let shape = self.json["operations"][op]["output"]["shape"]
            .as_str()
            .unwrap_or_default();
        self.json["shapes"][shape]["members"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, m)| m["location"] == "header")
            .filter_map(|(_, m)| m["locationName"].as_str().map(str::to_ascii_lowercase))
            .collect()
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

// ------------------------------------------------------------- EC2 XML

/// One element of an XML document: its local name (namespace prefix
/// dropped), attributes, child elements and text (entities resolved).
#[derive(Debug, Clone)]
pub struct Xml {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Xml>,
    pub text: String,
}

impl Xml {
    /// Parses a whole document; its root element.
    pub fn parse(doc: &str) -> Result<Xml, String> {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(doc);
        let mut stack: Vec<Xml> = Vec::new();
        let mut root = None;
        let open = |e: &quick_xml::events::BytesStart<'_>| -> Result<Xml, String> {
            let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            let mut attrs = Vec::new();
            for a in e.attributes() {
                let a = a.map_err(|e| format!("bad attribute: {e}"))?;
                let v = a
                    .decoded_and_normalized_value(
                        quick_xml::XmlVersion::Implicit1_0,
                        reader_decoder(),
                    )
                    .map_err(|e| format!("bad attribute value: {e}"))?;
                attrs.push((
                    String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                    v.into_owned(),
                ));
            }
            Ok(Xml {
                name,
                attrs,
                children: Vec::new(),
                text: String::new(),
            })
        };
        let mut close = |el: Xml, stack: &mut Vec<Xml>| -> Result<(), String> {
            match stack.last_mut() {
                Some(parent) => parent.children.push(el),
                None if root.is_none() => root = Some(el),
                None => return Err("more than one root element".into()),
            }
            Ok(())
        };
        loop {
            let ev = reader
                .read_event()
                .map_err(|e| format!("not well-formed XML at {}: {e}", reader.error_position()))?;
            match ev {
                Event::Start(e) => stack.push(open(&e)?),
                Event::Empty(e) => {
                    let el = open(&e)?;
                    close(el, &mut stack)?;
                }
                Event::End(_) => {
                    let el = stack.pop().ok_or("an end tag without a start")?;
                    close(el, &mut stack)?;
                }
                Event::Text(t) => {
                    let s = t.xml10_content().map_err(|e| e.to_string())?;
                    match stack.last_mut() {
                        Some(el) => el.text.push_str(&s),
                        None if s.trim().is_empty() => {}
                        None => return Err(format!("text {s:?} outside the root element")),
                    }
                }
                Event::CData(t) => {
                    let s = t.decode().map_err(|e| e.to_string())?;
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&s);
                    }
                }
                Event::GeneralRef(r) => {
                    let c = if r.is_char_ref() {
                        r.resolve_char_ref()
                            .map_err(|e| e.to_string())?
                            .ok_or("a character reference to nothing")?
                            .to_string()
                    } else {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("undefined entity &{name};"))?
                            .to_string()
                    };
                    if let Some(el) = stack.last_mut() {
                        el.text.push_str(&c);
                    }
                }
                Event::Eof => break,
                Event::Decl(_) | Event::Comment(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        if !stack.is_empty() {
            return Err(format!("element <{}> is not closed", stack[0].name));
        }
        root.ok_or_else(|| "no root element".to_string())
    }

    /// The first child element named `name`.
    pub fn child(&self, name: &str) -> Option<&Xml> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The element at `path` of child names below this one.
    pub fn at(&self, path: &[&str]) -> Option<&Xml> {
        path.iter().try_fold(self, |el, name| el.child(name))
    }

    /// The text at `path`, if the element is there.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path).map(|e| e.text.as_str())
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn reader_decoder() -> quick_xml::encoding::Decoder {
    quick_xml::Reader::from_str("").decoder()
}

/// A member of a structure as botocore's XML parsers look it up.
struct XmlMember<'a> {
    name: &'a str,
    shape: &'a str,
    /// A flattened list: each element of the member's name is one item.
    flattened: bool,
}

impl Model {
    fn shape(&self, name: &str) -> &Value {
        &self.json["shapes"][name]
    }

    /// The element name of structure member `name` (`member` its
    /// reference), as botocore's `BaseXMLResponseParser._member_key_name`
    /// finds it: a flattened list's member `locationName`, else the
    /// reference's `locationName`, else the member name unchanged (botocore
    /// lowercases first letters only when serializing EC2 requests).
    fn wire_name<'a>(&'a self, name: &'a str, member: &'a Value) -> XmlMember<'a> {
        let shape_name = member["shape"].as_str().unwrap_or_default();
        let shape = self.shape(shape_name);
        let flattened =
            shape["type"] == "list" && (shape["flattened"] == true || member["flattened"] == true);
        let list_item = shape["member"]["locationName"].as_str();
        let wire = match (flattened, list_item) {
            (true, Some(item)) => item,
            _ => member["locationName"]
                .as_str()
                .or_else(|| shape["locationName"].as_str())
                .unwrap_or(name),
        };
        XmlMember {
            name: wire,
            shape: shape_name,
            flattened,
        }
    }

    /// Every problem of an EC2 Query-protocol response body `xml` against
    /// `op`'s output shape; empty when it conforms. The root must be
    /// `<{op}Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">`
    /// with one `<requestId>`; below it every element must be a member of
    /// its structure (by wire name), lists must hold their item elements,
    /// and scalars must parse as their type (integer, long, boolean,
    /// ISO-8601 timestamp, enum value). An operation without an output
    /// shape may send only `<return>true|false</return>`, as EC2 does.
    pub fn check_ec2_xml(&self, op: &str, xml: &str) -> Vec<String> {
        let mut out = Vec::new();
        let root = match Xml::parse(xml) {
            Ok(r) => r,
            Err(e) => return vec![format!("{op}: {e}")],
        };
        if root.name != format!("{op}Response") {
            out.push(format!(
                "{op}: the root element is <{}>, not <{op}Response>",
                root.name
            ));
        }
        let want_ns = self.json["metadata"]["xmlNamespace"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/');
        match root.attr("xmlns") {
            Some(ns) if ns.trim_end_matches('/') == want_ns => {}
            other => out.push(format!(
                "{op}: the root's xmlns is {other:?}, not {want_ns}/"
            )),
        }
        let ids: Vec<&Xml> = root
            .children
            .iter()
            .filter(|c| c.name == "requestId")
            .collect();
        if ids.len() != 1 || ids[0].text.trim().is_empty() || !ids[0].children.is_empty() {
            out.push(format!(
                "{op}: the response must carry one non-empty <requestId>, it has {}",
                ids.len()
            ));
        }
        let path = op.to_string();
        match self.json["operations"][op]["output"]["shape"].as_str() {
            Some(shape) => self.check_xml_structure(shape, &root, &path, &["requestId"], &mut out),
            None => {
                for c in root.children.iter().filter(|c| c.name != "requestId") {
                    if c.name == "return" && c.children.is_empty() {
                        check_xml_bool(&c.text, &format!("{path}.return"), "return", &mut out);
                    } else {
                        out.push(format!(
                            "{path}.{}: the model has no output for {op}",
                            c.name
                        ));
                    }
                }
                check_no_text(&root, &path, &mut out);
            }
        }
        out
    }

    fn check_xml_node(&self, shape_name: &str, el: &Xml, path: &str, out: &mut Vec<String>) {
        let shape = self.shape(shape_name);
        match shape["type"].as_str().unwrap_or("?") {
            "structure" => self.check_xml_structure(shape_name, el, path, &[], out),
            "list" => {
                check_no_text(el, path, out);
                let item = shape["member"]["locationName"].as_str().unwrap_or("member");
                let member = shape["member"]["shape"].as_str().unwrap_or_default();
                for (i, c) in el.children.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if c.name != item {
                        out.push(format!(
                            "{p}: <{}> in list {shape_name}, whose items are <{item}>",
                            c.name
                        ));
                        continue;
                    }
                    self.check_xml_node(member, c, &p, out);
                }
            }
            "map" => {
                check_no_text(el, path, out);
                let key = &shape["key"];
                let value = &shape["value"];
                let key_name = key["locationName"].as_str().unwrap_or("key");
                let value_name = value["locationName"].as_str().unwrap_or("value");
                for (i, entry) in el.children.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    if entry.name != "entry" {
                        out.push(format!(
                            "{p}: <{}> in map {shape_name}, not <entry>",
                            entry.name
                        ));
                        continue;
                    }
                    for c in &entry.children {
                        let s = if c.name == key_name {
                            key["shape"].as_str()
                        } else if c.name == value_name {
                            value["shape"].as_str()
                        } else {
                            None
                        };
                        match s {
                            Some(s) => self.check_xml_node(s, c, &format!("{p}.{}", c.name), out),
                            None => out.push(format!(
                                "{p}.{}: not a key or value of {shape_name}",
                                c.name
                            )),
                        }
                    }
                }
            }
            ty => {
                if !el.children.is_empty() {
                    out.push(format!(
                        "{path}: a {ty} ({shape_name}) holds elements <{}>",
                        el.children
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(">, <")
                    ));
                    return;
                }
                self.check_xml_scalar(ty, shape_name, shape, &el.text, path, out);
            }
        }
    }

    fn check_xml_structure(
        &self,
        shape_name: &str,
        el: &Xml,
        path: &str,
        ignored: &[&str],
        out: &mut Vec<String>,
    ) {
        let shape = self.shape(shape_name);
        if shape["type"] != "structure" {
            out.push(format!("{path}: {shape_name} is not a structure"));
            return;
        }
        check_no_text(el, path, out);
        let members: Vec<(&str, XmlMember<'_>)> = shape["members"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.as_str(), self.wire_name(k, v)))
                    .collect()
            })
            .unwrap_or_default();
        let mut seen: Vec<&str> = Vec::new();
        for c in &el.children {
            if ignored.contains(&c.name.as_str()) {
                continue;
            }
            let p = format!("{path}.{}", c.name);
            let Some((_, m)) = members.iter().find(|(_, m)| m.name == c.name) else {
                out.push(format!("{p}: not a member of {shape_name}"));
                continue;
            };
            if m.flattened {
                let item = self.shape(m.shape)["member"]["shape"]
                    .as_str()
                    .unwrap_or_default();
                self.check_xml_node(item, c, &p, out);
                continue;
            }
            if seen.contains(&m.name) {
                out.push(format!("{p}: repeated in {shape_name}"));
                continue;
            }
            seen.push(m.name);
            self.check_xml_node(m.shape, c, &p, out);
        }
        for r in shape["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            let wire = members
                .iter()
                .find(|(k, _)| *k == r)
                .map(|(_, m)| m.name)
                .unwrap_or(r);
            if !el.children.iter().any(|c| c.name == wire) {
                out.push(format!(
                    "{path}: required member {r} (<{wire}>) of {shape_name} missing"
                ));
            }
        }
    }

    fn check_xml_scalar(
        &self,
        ty: &str,
        shape_name: &str,
        shape: &Value,
        text: &str,
        path: &str,
        out: &mut Vec<String>,
    ) {
        let bad = |what: &str| format!("{path}: {text:?} is not {what} ({shape_name})");
        match ty {
            "string" => {
                if let Some(values) = shape["enum"].as_array() {
                    if !values.iter().any(|e| e.as_str() == Some(text)) {
                        out.push(format!("{path}: '{text}' is not in enum {shape_name}"));
                    }
                }
            }
            "integer" => {
                if !is_decimal(text) || text.parse::<i32>().is_err() {
                    out.push(bad("a 32-bit integer"));
                }
            }
            "long" => {
                if !is_decimal(text) || text.parse::<i64>().is_err() {
                    out.push(bad("a 64-bit integer"));
                }
            }
            "boolean" => check_xml_bool(text, path, shape_name, out),
            "double" | "float" => {
                if text.parse::<f64>().is_err() {
                    out.push(bad("a number"));
                }
            }
            "blob" => {
                use base64::Engine;
                if base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .is_err()
                {
                    out.push(bad("base64"));
                }
            }
            "timestamp" => {
                let format = shape["timestampFormat"].as_str().unwrap_or("iso8601");
                let ok = match format {
                    "iso8601" => is_iso8601(text),
                    "unixTimestamp" => text.parse::<f64>().is_ok(),
                    "rfc822" => time::OffsetDateTime::parse(
                        text,
                        &time::format_description::well_known::Rfc2822,
                    )
                    .is_ok(),
                    _ => false,
                };
                if !ok {
                    out.push(bad(&format!("a {format} timestamp")));
                }
            }
            other => out.push(format!(
                "{path}: unhandled shape type {other} ({shape_name})"
            )),
        }
    }
}

/// `-?[0-9]+`, the digits EC2 sends for an integer.
fn is_decimal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)`, as EC2 sends times
/// (`2016-11-15T09:30:00.000Z`).
fn is_iso8601(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
        && s.as_bytes().get(10) == Some(&b'T')
}

fn check_xml_bool(text: &str, path: &str, shape_name: &str, out: &mut Vec<String>) {
    if text != "true" && text != "false" {
        out.push(format!(
            "{path}: {text:?} is not a boolean ({shape_name}): EC2 sends true or false"
        ));
    }
}

fn check_no_text(el: &Xml, path: &str, out: &mut Vec<String>) {
    if !el.text.trim().is_empty() {
        out.push(format!(
            "{path}: text {:?} beside the members of <{}>",
            el.text.trim(),
            el.name
        ));
    }
}

/// Every problem of an EC2 error body: exactly
/// `<Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors><RequestID>..</RequestID></Response>`
/// (what EC2 sends and botocore's `EC2QueryParser._do_error_parse`
/// reads), with a non-empty code and request id.
pub fn check_ec2_error_xml(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let root = match Xml::parse(xml) {
        Ok(r) => r,
        Err(e) => return vec![format!("error body: {e}")],
    };
    if root.name != "Response" {
        out.push(format!(
            "error body: the root is <{}>, not <Response>",
            root.name
        ));
    }
    check_no_text(&root, "Response", &mut out);
    let names: Vec<&str> = root.children.iter().map(|c| c.name.as_str()).collect();
    if names != ["Errors", "RequestID"] {
        out.push(format!(
            "Response: holds <{}>, not <Errors> then <RequestID>",
            names.join(">, <")
        ));
    }
    if let Some(id) = root.child("RequestID") {
        if id.text.trim().is_empty() || !id.children.is_empty() {
            out.push("Response.RequestID: empty".into());
        }
    }
    if let Some(errors) = root.child("Errors") {
        check_no_text(errors, "Response.Errors", &mut out);
        if errors.children.is_empty() {
            out.push("Response.Errors: no <Error>".into());
        }
        for (i, e) in errors.children.iter().enumerate() {
            let p = format!("Response.Errors[{i}]");
            if e.name != "Error" {
                out.push(format!("{p}: <{}>, not <Error>", e.name));
                continue;
            }
            check_no_text(e, &p, &mut out);
            let names: Vec<&str> = e.children.iter().map(|c| c.name.as_str()).collect();
            if names != ["Code", "Message"] {
                out.push(format!(
                    "{p}: holds <{}>, not <Code> then <Message>",
                    names.join(">, <")
                ));
            }
            for c in &e.children {
                if !c.children.is_empty() {
                    out.push(format!("{p}.{}: holds elements", c.name));
                }
            }
            if e.child("Code").is_some_and(|c| c.text.trim().is_empty()) {
                out.push(format!("{p}.Code: empty"));
            }
        }
    }
    out
}

/// What botocore's own `EC2QueryParser` reads from each `(operation,
/// body)`: the parsed output (ResponseMetadata dropped), timestamps and
/// blobs as strings. One python process for all of them.
pub fn botocore_parse_ec2(responses: &[(String, String)]) -> Vec<Value> {
    let input = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input.path(), serde_json::to_vec(responses).unwrap()).unwrap();
    let script = "import json,sys,botocore.session\n\
        from botocore.parsers import EC2QueryParser\n\
        m=botocore.session.get_session().get_service_model('ec2')\n\
        out=[]\n\
        for op,body in json.load(open(sys.argv[1])):\n\
        \x20   r=EC2QueryParser().parse({'body':body.encode(),'headers':{},'status_code':200},m.operation_model(op).output_shape)\n\
        \x20   r.pop('ResponseMetadata',None)\n\
        \x20   out.append(r)\n\
        json.dump(out,sys.stdout,default=str)\n";
    let out = std::process::Command::new(super::serve::python())
        .args(["-c", script])
        .arg(input.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "botocore could not parse the responses: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The leaves of a parsed value: scalars, empty lists and empty objects.
pub fn json_leaves(v: &Value) -> usize {
    match v {
        Value::Array(a) if !a.is_empty() => a.iter().map(json_leaves).sum(),
        Value::Object(o) if !o.is_empty() => o.values().map(json_leaves).sum(),
        _ => 1,
    }
}

/// The leaf elements below `el` (elements without children), those named
/// in `skip` not counted.
pub fn xml_leaves(el: &Xml, skip: &[&str]) -> usize {
    el.children
        .iter()
        .filter(|c| !skip.contains(&c.name.as_str()))
        .map(|c| {
            if c.children.is_empty() {
                1
            } else {
                xml_leaves(c, &[])
            }
        })
        .sum()
}
