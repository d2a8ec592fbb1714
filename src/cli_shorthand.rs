//! The aws CLI's shorthand (and JSON) forms of the EC2 list arguments the
//! keyvol CLIs accept with the aws spellings: `--filters` and
//! `--tag-specifications`.
//!
//! ```text
//! --filters Name=tag:team,Values=db,web
//! --filters '[{"Name":"status","Values":["available"]}]'
//! --tag-specifications 'ResourceType=volume,Tags=[{Key=team,Value=db},{Key=env,Value=prod}]'
//! ```

use serde_json::Value;

/// `(name, values)` of each filter.
pub fn filters(raw: &[String]) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut out = Vec::new();
    for r in raw {
        let t = r.trim();
        if t.starts_with('[') || t.starts_with('{') {
            let v: Value =
                serde_json::from_str(t).map_err(|e| format!("--filters {t}: not JSON: {e}"))?;
            let items = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            for i in items {
                let name = i["Name"]
                    .as_str()
                    .ok_or_else(|| format!("--filters {t}: a filter without Name"))?;
                let values = i["Values"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((name.to_string(), values));
            }
            continue;
        }
        let rest = t
            .strip_prefix("Name=")
            .ok_or_else(|| format!("--filters {t}: expected Name=NAME,Values=V1,V2"))?;
        let (name, values) = rest
            .split_once(",Values=")
            .ok_or_else(|| format!("--filters {t}: expected Name=NAME,Values=V1,V2"))?;
        out.push((
            name.to_string(),
            values
                .split(',')
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect(),
        ));
    }
    Ok(out)
}

/// One tag specification: its resource type and `(key, value)` tags.
pub type TagSpecification = (String, Vec<(String, String)>);

/// Each tag specification.
pub fn tag_specifications(raw: &[String]) -> Result<Vec<TagSpecification>, String> {
    let mut out = Vec::new();
    for r in raw {
        let t = r.trim();
        if t.starts_with('[') || t.starts_with('{') {
            let v: Value = serde_json::from_str(t)
                .map_err(|e| format!("--tag-specifications {t}: not JSON: {e}"))?;
            let items = match v {
                Value::Array(a) => a,
                other => vec![other],
            };
            for i in items {
                let rt = i["ResourceType"].as_str().unwrap_or_default().to_string();
                let tags = i["Tags"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|t| {
                                (
                                    t["Key"].as_str().unwrap_or_default().to_string(),
                                    t["Value"].as_str().unwrap_or_default().to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((rt, tags));
            }
            continue;
        }
        let bad = || {
            format!("--tag-specifications {t}: expected ResourceType=volume,Tags=[{{Key=k,Value=v}},...]")
        };
        let rest = t.strip_prefix("ResourceType=").ok_or_else(bad)?;
        let (rt, tags) = rest.split_once(",Tags=").ok_or_else(bad)?;
        let inner = tags
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .ok_or_else(bad)?;
        let mut list = Vec::new();
        for item in inner.split("},") {
            let item = item.trim().trim_start_matches('{').trim_end_matches('}');
            if item.is_empty() {
                continue;
            }
            let key = item.strip_prefix("Key=").ok_or_else(bad)?;
            let (k, v) = key.split_once(",Value=").unwrap_or((key, ""));
            list.push((k.to_string(), v.to_string()));
        }
        out.push((rt.to_string(), list));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_and_json_read_the_same() {
        let a = filters(&["Name=tag:team,Values=db,web".into()]).unwrap();
        let b = filters(&[r#"[{"Name":"tag:team","Values":["db","web"]}]"#.into()]).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a,
            vec![(
                "tag:team".to_string(),
                vec!["db".to_string(), "web".to_string()]
            )]
        );
        let t = tag_specifications(&[
            "ResourceType=volume,Tags=[{Key=team,Value=db},{Key=env,Value=prod}]".into(),
        ])
        .unwrap();
        let j = tag_specifications(&[r#"[{"ResourceType":"volume","Tags":[{"Key":"team","Value":"db"},{"Key":"env","Value":"prod"}]}]"#.into()]).unwrap();
        assert_eq!(t, j);
        assert_eq!(t[0].1[1], ("env".to_string(), "prod".to_string()));
        assert!(filters(&["status=available".into()]).is_err());
        assert!(tag_specifications(&["Tags=[]".into()]).is_err());
    }
}
