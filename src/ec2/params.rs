//! The parameters of an EC2 Query-protocol request, as the AWS SDKs send
//! them: flat `Name=value` pairs, lists as `Name.1`, `Name.2`, ..., and
//! structures in lists as `Filter.1.Name`, `Filter.1.Value.1`.
//!
//! Every accessor checks what it reads (numbers, booleans, list indices)
//! and names the parameter in its `InvalidParameterValue` error.

use std::collections::BTreeMap;

use crate::api_error::{ApiError, ApiResult};

/// Most entries one list parameter may have (EC2 caps filters and ids in
/// the hundreds; this bounds what one request can make the service do).
pub const MAX_LIST: usize = 1000;

/// One request's parameters.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

/// A `Filter.N` of a Describe call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

/// A tag as EC2 carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

fn short(s: &str) -> String {
    let mut t: String = s.chars().take(64).collect();
    if t.len() < s.len() {
        t.push_str("...");
    }
    t
}

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Params { pairs }
    }

    /// Every pair, for audit (the caller caps and redacts).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The value of `name`, the last one if repeated.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a required parameter (`MissingParameter` otherwise).
    pub fn required(&self, name: &str) -> ApiResult<&str> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::new(
                "MissingParameter",
                format!("The request must contain the parameter {name}"),
            )),
        }
    }

    pub fn bool(&self, name: &str) -> ApiResult<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid_parameter(format!(
                "Value ({}) for parameter {name} is invalid. Expected: 'true' or 'false'.",
                short(v)
            ))),
        }
    }

    pub fn int(&self, name: &str) -> ApiResult<Option<i64>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| {
                ApiError::invalid_parameter(format!(
                    "Value ({}) for parameter {name} is invalid. Expected an integer.",
                    short(v)
                ))
            }),
        }
    }

    /// The entries `prefix.N[.rest]` grouped by N in order of N: for each,
    /// the pairs with `prefix.N.` stripped (the value of `prefix.N` itself
    /// under the empty name).
    fn indexed(&self, prefix: &str) -> ApiResult<Vec<Vec<(String, String)>>> {
        let mut groups: BTreeMap<u32, Vec<(String, String)>> = BTreeMap::new();
        let head = format!("{prefix}.");
        for (k, v) in &self.pairs {
            let Some(rest) = k.strip_prefix(&head) else {
                continue;
            };
            let (n, tail) = match rest.split_once('.') {
                Some((n, t)) => (n, t),
                None => (rest, ""),
            };
            let idx: u32 = n.parse().ok().filter(|i| *i >= 1).ok_or_else(|| {
                ApiError::invalid_parameter(format!(
                    "The parameter {} has an invalid index: list members are numbered from 1 ({prefix}.1, {prefix}.2, ...)",
                    short(k)
                ))
            })?;
            groups
                .entry(idx)
                .or_default()
                .push((tail.to_string(), v.clone()));
            if groups.len() > MAX_LIST {
                return Err(ApiError::invalid_parameter(format!(
                    "The list {prefix} has more than {MAX_LIST} members"
                )));
            }
        }
        Ok(groups.into_values().collect())
    }

    /// A list of strings: `prefix.1`, `prefix.2`, ...
    pub fn list(&self, prefix: &str) -> ApiResult<Vec<String>> {
        Ok(self
            .indexed(prefix)?
            .into_iter()
            .filter_map(|g| g.into_iter().find(|(k, _)| k.is_empty()).map(|(_, v)| v))
            .collect())
    }

    /// `Filter.N.Name` and `Filter.N.Value.M`.
    pub fn filters(&self) -> ApiResult<Vec<Filter>> {
        let mut out = Vec::new();
        for g in self.indexed("Filter")? {
            let sub = Params::new(g);
            let name = sub.get("Name").map(str::to_string).ok_or_else(|| {
                ApiError::new(
                    "MissingParameter",
                    "The request must contain the parameter Filter.N.Name",
                )
            })?;
            out.push(Filter {
                name,
                values: sub.list("Value")?,
            });
        }
        Ok(out)
    }

    /// `prefix.N.Key` and `prefix.N.Value` (Tag lists).
    pub fn tags(&self, prefix: &str) -> ApiResult<Vec<Tag>> {
        let mut out = Vec::new();
        for g in self.indexed(prefix)? {
            let sub = Params::new(g);
            let key = sub.get("Key").unwrap_or_default().to_string();
            out.push(Tag {
                key,
                value: sub.get("Value").unwrap_or_default().to_string(),
            });
        }
        Ok(out)
    }

    /// `prefix.N.Key` with its `prefix.N.Value` if one was sent: DeleteTags
    /// tells an absent value (any value) from an empty one.
    pub fn tag_keys(&self, prefix: &str) -> ApiResult<Vec<(String, Option<String>)>> {
        let mut out = Vec::new();
        for g in self.indexed(prefix)? {
            let sub = Params::new(g);
            let key = sub.required("Key").map_err(|_| {
                ApiError::new(
                    "MissingParameter",
                    format!("The request must contain the parameter {prefix}.N.Key"),
                )
            })?;
            out.push((key.to_string(), sub.get("Value").map(str::to_string)));
        }
        Ok(out)
    }

    /// `TagSpecification.N.ResourceType` and `TagSpecification.N.Tag.M.*`:
    /// the tags for resources of type `resource_type`. A specification for
    /// another type is refused, as EC2 does.
    pub fn tag_specifications(&self, resource_type: &str) -> ApiResult<Vec<Tag>> {
        let mut out = Vec::new();
        for g in self.indexed("TagSpecification")? {
            let sub = Params::new(g);
            let rt = sub.required("ResourceType").map_err(|_| {
                ApiError::new(
                    "MissingParameter",
                    "The request must contain the parameter TagSpecification.N.ResourceType",
                )
            })?;
            if rt != resource_type {
                return Err(ApiError::invalid_parameter(format!(
                    "'{}' is not a valid taggable resource type for this operation: use '{resource_type}'.",
                    short(rt)
                )));
            }
            out.extend(sub.tags("Tag")?);
        }
        Ok(out)
    }

    /// `prefix.N.rest` values of a list of structures (`CreateVolumePermission.Add.N.UserId`).
    pub fn struct_list_field(&self, prefix: &str, field: &str) -> ApiResult<Vec<String>> {
        Ok(self
            .indexed(prefix)?
            .into_iter()
            .filter_map(|g| g.into_iter().find(|(k, _)| k == field).map(|(_, v)| v))
            .collect())
    }

    /// True when any parameter starts with `prefix.`.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        let head = format!("{prefix}.");
        self.pairs.iter().any(|(k, _)| k.starts_with(&head))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Params {
        Params::new(form_urlencoded::parse(s.as_bytes()).into_owned().collect())
    }

    #[test]
    fn lists_filters_and_tags_follow_their_indices() {
        let q = p("VolumeId.2=vol-b&VolumeId.1=vol-a&Filter.1.Name=status&Filter.1.Value.1=available&Filter.1.Value.2=in-use&TagSpecification.1.ResourceType=volume&TagSpecification.1.Tag.1.Key=team&TagSpecification.1.Tag.1.Value=db");
        assert_eq!(q.list("VolumeId").unwrap(), ["vol-a", "vol-b"]);
        let f = q.filters().unwrap();
        assert_eq!(f[0].name, "status");
        assert_eq!(f[0].values, ["available", "in-use"]);
        let t = q.tag_specifications("volume").unwrap();
        assert_eq!(
            t,
            [Tag {
                key: "team".into(),
                value: "db".into()
            }]
        );
        assert!(q.tag_specifications("snapshot").is_err());
    }

    #[test]
    fn bad_numbers_booleans_and_indices_name_the_parameter() {
        let q = p("Size=ten&Encrypted=yes&VolumeId.0=x");
        assert!(q.int("Size").unwrap_err().message.contains("Size"));
        assert!(q
            .bool("Encrypted")
            .unwrap_err()
            .message
            .contains("Encrypted"));
        assert!(q.list("VolumeId").is_err());
        assert_eq!(q.required("Missing").unwrap_err().code, "MissingParameter");
    }
}
