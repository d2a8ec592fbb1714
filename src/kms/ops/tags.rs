//! Resource tags of keys.

use super::*;

pub(super) fn validate_tags(tags: &[Tag]) -> KmsResult<()> {
    if tags.len() > 50 {
        return Err(KmsError::new(
            ErrorCode::TagException,
            "Too many tags: a key can have at most 50 tags.",
        ));
    }
    for (i, t) in tags.iter().enumerate() {
        let member = i + 1;
        let key_field = format!("tags.{member}.member.tagKey");
        if t.tag_key.is_empty() {
            // AWS echoes the empty key.
            return Err(Violation::shown(key_field, "", Constraint::MinLength(1)).into());
        }
        validate::length(&key_field, &t.tag_key, 1, 128)?;
        validate::length(
            &format!("tags.{member}.member.tagValue"),
            &t.tag_value,
            0,
            256,
        )?;
        if tags[..i].iter().any(|o| o.tag_key == t.tag_key) {
            return Err(KmsError::new(ErrorCode::TagException, "Duplicate tag keys"));
        }
        if t.tag_key.to_ascii_lowercase().starts_with("aws:") {
            return Err(KmsError::new(
                ErrorCode::TagException,
                format!(
                    "Tag key '{}' is invalid: tag keys beginning with 'aws:' are reserved.",
                    t.tag_key
                ),
            ));
        }
    }
    Ok(())
}

pub(super) fn put_tags(tx: &rusqlite::Connection, id: &KeyId, tags: &[Tag]) -> KmsResult<()> {
    for t in tags {
        tx.execute(
            "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?1,?2,?3) ON CONFLICT(key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
            rusqlite::params![id, t.tag_key, t.tag_value],
        )
        .map_err(store::db)?;
    }
    let n: i64 = tx
        .query_row("SELECT COUNT(*) FROM tags WHERE key_id = ?1", [id], |r| {
            r.get(0)
        })
        .map_err(store::db)?;
    if n > 50 {
        return Err(KmsError::new(
            ErrorCode::TagException,
            "Too many tags: a key can have at most 50 tags.",
        ));
    }
    Ok(())
}

impl Kms {
    pub(crate) fn tag_resource_body(
        &self,
        op: &mut Op<'_>,
        req: &TagResourceRequest,
    ) -> KmsResult<Empty> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        let tags = req.tags.clone().unwrap_or_default();
        let mut cond = no_conditions();
        for t in &tags {
            cond.insert(format!("aws:RequestTag/{}", t.tag_key), json!(t.tag_value));
        }
        cond.insert(
            "aws:TagKeys".into(),
            json!(tags.iter().map(|t| &t.tag_key).collect::<Vec<_>>()),
        );
        op.authorize("kms:TagResource", &k, &cond)?;
        if k.is_aws_managed() {
            return Err(access_denied_managed(op, "kms:TagResource", &k));
        }
        k.check_state(StateRule::Manage)?;
        validate_tags(&tags)?;
        put_tags(op.tx, &k.key_id, &tags)?;
        Ok(Empty {})
    }

    pub(crate) fn untag_resource_body(
        &self,
        op: &mut Op<'_>,
        req: &UntagResourceRequest,
    ) -> KmsResult<Empty> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        let keys = req.tag_keys.clone().unwrap_or_default();
        let mut cond = no_conditions();
        cond.insert("aws:TagKeys".into(), json!(keys));
        op.authorize("kms:UntagResource", &k, &cond)?;
        if k.is_aws_managed() {
            return Err(access_denied_managed(op, "kms:UntagResource", &k));
        }
        k.check_state(StateRule::Manage)?;
        for t in keys {
            op.tx
                .execute(
                    "DELETE FROM tags WHERE key_id = ?1 AND tag_key = ?2",
                    rusqlite::params![k.key_id, t],
                )
                .map_err(store::db)?;
        }
        Ok(Empty {})
    }

    pub(crate) fn list_resource_tags_body(
        &self,
        op: &mut Op<'_>,
        req: &ListRequest,
    ) -> KmsResult<ListTagsResponse> {
        let k = op.resolve(req.key_id.as_deref(), false)?;
        op.permit("kms:ListResourceTags", &k, StateRule::Any, &no_conditions())?;
        let tags = store::tags(op.tx, &k.key_id)?
            .into_iter()
            .map(|(tag_key, tag_value)| Tag { tag_key, tag_value })
            .collect();
        Ok(ListTagsResponse {
            tags,
            truncated: false,
        })
    }
}
