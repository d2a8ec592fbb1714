//! Tags (CreateTags, DeleteTags, DescribeTags), the account's EBS
//! encryption defaults of a region, DescribeRegions and
//! DescribeAvailabilityZones.

use serde_json::{json, Value};

use crate::api_error::{ApiError, ApiResult};
use crate::ids::KNOWN_REGIONS;
use crate::policy::ConditionContext;

use super::authz::{request_tags, Resource};
use super::records::{check_tags, Records};
use super::volumes::zones;
use super::{page, passes, Call, Tag};

fn anywhere() -> [Resource; 1] {
    [Resource::new("*".into())]
}

/// A taggable resource of the caller (own volume or own snapshot) as a
/// resource of the request, or EC2's not-found error.
fn taggable(c: &Call<'_>, id: &str) -> ApiResult<Resource> {
    if id.starts_with("vol-") {
        let vols = super::volumes::volumes(c)?;
        let records = Records::open(c.s)?;
        let r = vols.get(id)?;
        let o = records.volume_options(id)?;
        let t = records.tags(id)?;
        return Ok(super::volumes::volume_resource(c, &r, &o, &t));
    }
    if id.starts_with("snap-") {
        let res = super::snapshots::snapshot_resource(c, id)?;
        let own = matches!(res.conditions.get("ec2:Owner"),
            Some(crate::policy::ConditionValue::String(o)) if o == c.account());
        if !own {
            // Tags of a shared snapshot belong to its owner.
            return Err(ApiError::new(
                "InvalidSnapshot.NotFound",
                format!("The snapshot '{id}' does not exist."),
            ));
        }
        return Ok(res);
    }
    Err(ApiError::new(
        "InvalidID",
        format!(
            "The ID '{}' is not valid: keyvol tags volumes (vol-...) and snapshots (snap-...)",
            id.chars().take(64).collect::<String>()
        ),
    ))
}

fn resources(c: &Call<'_>) -> ApiResult<Vec<(String, Resource)>> {
    let ids = c.p.list("ResourceId")?;
    if ids.is_empty() {
        return Err(ApiError::new(
            "MissingParameter",
            "The request must contain the parameter ResourceId.N",
        ));
    }
    ids.into_iter()
        .map(|id| taggable(c, &id).map(|r| (id, r)))
        .collect()
}

pub fn create_tags(c: &Call<'_>) -> ApiResult<Value> {
    let tags = c.p.tags("Tag")?;
    if tags.is_empty() {
        return Err(ApiError::new(
            "MissingParameter",
            "The request must contain the parameter Tag.N",
        ));
    }
    check_tags(&tags)?;
    let targets = resources(c)?;
    let res: Vec<Resource> = targets.iter().map(|(_, r)| r.clone()).collect();
    c.authorize(&res, &request_tags(&tags))?;
    let records = Records::open(c.s)?;
    for (id, _) in &targets {
        records.put_tags(id, &tags)?;
    }
    Ok(json!({"return": true}))
}

pub fn delete_tags(c: &Call<'_>) -> ApiResult<Value> {
    let keys = c.p.tag_keys("Tag")?;
    let tags: Vec<Tag> = keys
        .iter()
        .map(|(k, v)| Tag {
            key: k.clone(),
            value: v.clone().unwrap_or_default(),
        })
        .collect();
    let targets = resources(c)?;
    let res: Vec<Resource> = targets.iter().map(|(_, r)| r.clone()).collect();
    let mut request = ConditionContext::new();
    if !tags.is_empty() {
        request.insert(
            "aws:TagKeys",
            tags.iter().map(|t| t.key.clone()).collect::<Vec<_>>(),
        );
    }
    c.authorize(&res, &request)?;
    let records = Records::open(c.s)?;
    for (id, _) in &targets {
        records.delete_tags(id, &keys)?;
    }
    Ok(json!({"return": true}))
}

pub fn describe_tags(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    c.authorize(&anywhere(), &ConditionContext::new())?;
    let records = Records::open(c.s)?;
    let mut out = Vec::new();
    for (id, t) in records.all_tags()? {
        let kind = if id.starts_with("vol-") {
            "volume"
        } else {
            "snapshot"
        };
        let one = std::slice::from_ref(&t);
        let field = |name: &str| -> Option<Vec<String>> {
            match name {
                "key" => Some(vec![t.key.clone()]),
                "value" => Some(vec![t.value.clone()]),
                "resource-id" => Some(vec![id.clone()]),
                "resource-type" => Some(vec![kind.to_string()]),
                _ => None,
            }
        };
        if passes(&filters, one, &field)? {
            out.push(
                json!({"resourceId": id, "resourceType": kind, "key": t.key, "value": t.value}),
            );
        }
    }
    let (items, next) = page(c.p, out, 5, 1000)?;
    Ok(json!({"tagSet": items, "nextToken": next}))
}

// ------------------------------------------------------- encryption defaults

fn ebs_alias_arn(c: &Call<'_>) -> String {
    format!(
        "arn:aws:kms:{}:{}:{}",
        c.region(),
        c.account(),
        crate::kms::EBS_ALIAS
    )
}

pub fn enable_ebs_encryption_by_default(c: &Call<'_>) -> ApiResult<Value> {
    c.authorize(&anywhere(), &ConditionContext::new())?;
    Records::open(c.s)?.set_encryption_by_default(true)?;
    Ok(json!({"ebsEncryptionByDefault": true}))
}

pub fn disable_ebs_encryption_by_default(c: &Call<'_>) -> ApiResult<Value> {
    c.authorize(&anywhere(), &ConditionContext::new())?;
    Records::open(c.s)?.set_encryption_by_default(false)?;
    Ok(json!({"ebsEncryptionByDefault": false}))
}

pub fn get_ebs_encryption_by_default(c: &Call<'_>) -> ApiResult<Value> {
    c.authorize(&anywhere(), &ConditionContext::new())?;
    let (on, _) = Records::open(c.s)?.ebs_defaults()?;
    Ok(json!({"ebsEncryptionByDefault": on, "sseType": "sse-ebs"}))
}

pub fn get_ebs_default_kms_key_id(c: &Call<'_>) -> ApiResult<Value> {
    c.authorize(&anywhere(), &ConditionContext::new())?;
    let (_, key) = Records::open(c.s)?.ebs_defaults()?;
    Ok(json!({"kmsKeyId": key.unwrap_or_else(|| ebs_alias_arn(c))}))
}

pub fn modify_ebs_default_kms_key_id(c: &Call<'_>) -> ApiResult<Value> {
    let key = c.p.required("KmsKeyId")?.to_string();
    c.authorize(&anywhere(), &ConditionContext::new())?;
    // The key is checked as the caller sees it, via EC2: it must exist in
    // this region and be a symmetric encryption key.
    let kms = c.s.kms_client()?;
    let md = kms
        .describe_key(&c.s.ctx.via_ec2(), &key)
        .map_err(|e| match e.code {
            crate::kms::ErrorCode::NotFoundException => ApiError::new(
                "InvalidKMSKey.NotFound",
                format!(
                    "The KMS key '{}' does not exist in this region",
                    key.chars().take(256).collect::<String>()
                ),
            ),
            _ => ApiError::from(e),
        })?;
    if !md.is_symmetric_encryption() {
        return Err(ApiError::invalid_parameter(format!(
            "KMS key {} is not a symmetric encryption key: the EBS default key must be SYMMETRIC_DEFAULT with KeyUsage ENCRYPT_DECRYPT",
            md.arn
        )));
    }
    let arn = md.arn;
    Records::open(c.s)?.set_default_kms_key(Some(&arn))?;
    Ok(json!({"kmsKeyId": arn}))
}

pub fn reset_ebs_default_kms_key_id(c: &Call<'_>) -> ApiResult<Value> {
    c.authorize(&anywhere(), &ConditionContext::new())?;
    Records::open(c.s)?.set_default_kms_key(None)?;
    Ok(json!({"kmsKeyId": ebs_alias_arn(c)}))
}

// ------------------------------------------------------- regions and zones

/// The zone id of a zone as AWS spells them: the region abbreviated
/// (`us-east-1` -> `use1`, `ap-southeast-2` -> `apse2`, `us-gov-west-1` ->
/// `usgw1`) and `-az1`, `-az2`, `-az3` for the zones `a`, `b`, `c`.
fn zone_id(zone: &str) -> String {
    let (region, letter) = zone.split_at(zone.len() - 1);
    let n = letter
        .as_bytes()
        .first()
        .map_or(1, |l| l.saturating_sub(b'a') + 1);
    format!("{}-az{n}", region_abbreviation(region))
}

fn region_abbreviation(region: &str) -> String {
    region
        .split('-')
        .enumerate()
        .map(|(i, part)| match (i, part) {
            (0, geo) => geo.to_string(),
            (_, "north") => "n".into(),
            (_, "south") => "s".into(),
            (_, "east") => "e".into(),
            (_, "west") => "w".into(),
            (_, "central") => "c".into(),
            (_, "northeast") => "ne".into(),
            (_, "southeast") => "se".into(),
            (_, "northwest") => "nw".into(),
            (_, "southwest") => "sw".into(),
            (_, "gov") => "g".into(),
            (_, other) => other.to_string(),
        })
        .collect()
}

/// The zone name of a zone id of `region`.
pub(crate) fn zone_of_id(region: &str, id: &str) -> Option<String> {
    zones(region).into_iter().find(|z| zone_id(z) == id)
}

pub fn describe_regions(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    let names = c.p.list("RegionName")?;
    c.authorize(&anywhere(), &ConditionContext::new())?;
    if let Some(bad) = names.iter().find(|n| !KNOWN_REGIONS.contains(&n.as_str())) {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid region names: [{}]",
            bad.chars().take(32).collect::<String>()
        )));
    }
    let mut out = Vec::new();
    for r in KNOWN_REGIONS {
        if !names.is_empty() && !names.iter().any(|n| n == r) {
            continue;
        }
        let endpoint = format!("ec2.{r}.amazonaws.com");
        let field = |name: &str| -> Option<Vec<String>> {
            match name {
                "region-name" => Some(vec![r.to_string()]),
                "endpoint" => Some(vec![endpoint.clone()]),
                "opt-in-status" => Some(vec!["opt-in-not-required".into()]),
                _ => None,
            }
        };
        if passes(&filters, &[], &field)? {
            out.push(json!({"regionName": r, "regionEndpoint": endpoint, "optInStatus": "opt-in-not-required"}));
        }
    }
    Ok(json!({"regionInfo": out}))
}

pub fn describe_availability_zones(c: &Call<'_>) -> ApiResult<Value> {
    let filters = c.p.filters()?;
    let names = c.p.list("ZoneName")?;
    let ids = c.p.list("ZoneId")?;
    c.authorize(&anywhere(), &ConditionContext::new())?;
    let all = zones(c.region());
    for n in &names {
        if !all.contains(n) {
            return Err(ApiError::invalid_parameter(format!(
                "The zone '{}' does not exist.",
                n.chars().take(32).collect::<String>()
            )));
        }
    }
    let mut out = Vec::new();
    for z in &all {
        let id = zone_id(z);
        if (!names.is_empty() && !names.contains(z)) || (!ids.is_empty() && !ids.contains(&id)) {
            continue;
        }
        let field = |name: &str| -> Option<Vec<String>> {
            match name {
                "zone-name" => Some(vec![z.clone()]),
                "zone-id" => Some(vec![id.clone()]),
                "state" => Some(vec!["available".into()]),
                "region-name" | "group-name" | "network-border-group" => {
                    Some(vec![c.region().to_string()])
                }
                "zone-type" => Some(vec!["availability-zone".into()]),
                "opt-in-status" => Some(vec!["opt-in-not-required".into()]),
                _ => None,
            }
        };
        if passes(&filters, &[], &field)? {
            out.push(json!({
                "zoneName": z, "zoneId": id, "zoneState": "available", "regionName": c.region(),
                "groupName": c.region(), "networkBorderGroup": c.region(),
                "zoneType": "availability-zone", "optInStatus": "opt-in-not-required", "messageSet": [],
            }));
        }
    }
    Ok(json!({"availabilityZoneInfo": out}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_are_spelled_as_aws_spells_them() {
        assert_eq!(zone_id("us-east-1b"), "use1-az2");
        assert_eq!(zone_id("ap-southeast-2a"), "apse2-az1");
        assert_eq!(zone_id("eu-central-1c"), "euc1-az3");
        assert_eq!(zone_id("us-gov-west-1a"), "usgw1-az1");
        assert_eq!(
            zone_of_id("us-west-2", "usw2-az3").as_deref(),
            Some("us-west-2c")
        );
        assert_eq!(zone_of_id("us-west-2", "us-west-2-az3"), None);
    }
}
