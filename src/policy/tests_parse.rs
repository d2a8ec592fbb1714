//! Parser tests: every malformed-policy case and its message, and the
//! accepted forms of the grammar.

use serde_json::{json, Value};

use super::*;

fn stmt(extra: Value) -> Value {
    let mut s = json!({"Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "kms:*", "Resource": "*"});
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if v.is_null() {
                s.remove(k);
            } else {
                s.insert(k.clone(), v.clone());
            }
        }
    }
    s
}

/// A key policy of one statement: the base statement with `extra` merged
/// in (a null removes an element).
fn key_policy(extra: Value) -> String {
    json!({"Version": "2012-10-17", "Statement": [stmt(extra)]}).to_string()
}

fn key_err(text: &str) -> String {
    PolicyDocument::parse_key_policy(text)
        .unwrap_err()
        .to_string()
}

#[test]
fn malformed_policies_name_the_problem() {
    let cases: Vec<(&str, String, &str)> = vec![
        ("invalid JSON", "{\"Statement\": [".into(), "Syntax errors in policy: invalid JSON"),
        ("not an object", "[1, 2]".into(), "Syntax errors in policy: a policy must be a JSON object"),
        ("bad version", json!({"Version": "2013-01-01", "Statement": [stmt(json!({}))]}).to_string(), "Invalid policy version '2013-01-01'"),
        ("version not a string", json!({"Version": 2012, "Statement": [stmt(json!({}))]}).to_string(), "Syntax errors in policy: Version must be a string"),
        ("unknown top-level element", json!({"Version": "2012-10-17", "Statment": [stmt(json!({}))]}).to_string(), "Syntax errors in policy: unknown element 'Statment' in the policy"),
        ("no statement", json!({"Version": "2012-10-17"}).to_string(), "Policy contains no statement"),
        ("empty statement list", json!({"Version": "2012-10-17", "Statement": []}).to_string(), "Policy contains no statement"),
        ("statement not an object", json!({"Statement": ["x"]}).to_string(), "Syntax errors in policy: each statement must be a JSON object"),
        ("statement is a string", json!({"Statement": "x"}).to_string(), "Syntax errors in policy: Statement must be an object or a list of objects"),
        ("unknown statement element", key_policy(json!({"Actions": "kms:*"})), "Syntax errors in policy: unknown element 'Actions' in a statement"),
        ("no effect", key_policy(json!({"Effect": null})), "Policy contains a statement with no effect"),
        ("lowercase effect", key_policy(json!({"Effect": "allow"})), "Policy contains a statement with an invalid effect 'allow'"),
        ("no action", key_policy(json!({"Action": null})), "Policy contains a statement with no action"),
        ("empty action list", key_policy(json!({"Action": []})), "Policy contains a statement with no action"),
        ("Action and NotAction", key_policy(json!({"NotAction": "kms:Decrypt"})), "Policy contains a statement with both Action and NotAction"),
        ("action without vendor", key_policy(json!({"Action": "Decrypt"})), "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.: 'Decrypt'"),
        ("action with empty name", key_policy(json!({"Action": ["kms:Decrypt", "kms:"]})), "must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.: 'kms:'"),
        ("action not a string", key_policy(json!({"Action": [1]})), "Syntax errors in policy: Action must be a string or a list of strings"),
        ("no resource", key_policy(json!({"Resource": null})), "Policy contains a statement with no resource"),
        ("Resource and NotResource", key_policy(json!({"NotResource": "*"})), "Policy contains a statement with both Resource and NotResource"),
        ("resource not an ARN", key_policy(json!({"Resource": "key/1234"})), "Resource key/1234 must be in ARN format or \"*\"."),
        ("no principal in a key policy", key_policy(json!({"Principal": null})), "Policy contains a statement with no principal"),
        ("Principal and NotPrincipal", key_policy(json!({"NotPrincipal": "*"})), "Policy contains a statement with both Principal and NotPrincipal"),
        ("principal wildcard ARN", key_policy(json!({"Principal": {"AWS": "arn:aws:iam::111122223333:user/*"}})), "Policy contains a statement with one or more invalid principals: 'arn:aws:iam::111122223333:user/*'"),
        ("principal user name", key_policy(json!({"Principal": {"AWS": "alice"}})), "invalid principals: 'alice'"),
        ("principal short account", key_policy(json!({"Principal": {"AWS": ["111122223333", "12345"]}})), "invalid principals: '12345'"),
        ("principal group", key_policy(json!({"Principal": {"AWS": "arn:aws:iam::111122223333:group/admins"}})), "invalid principals: 'arn:aws:iam::111122223333:group/admins'"),
        ("principal bare string", key_policy(json!({"Principal": "arn:aws:iam::111122223333:root"})), "invalid principals: 'arn:aws:iam::111122223333:root'"),
        ("principal unknown type", key_policy(json!({"Principal": {"Foo": "x"}})), "invalid principals: 'Foo: x'"),
        ("principal empty object", key_policy(json!({"Principal": {}})), "invalid principals: '{}'"),
        ("principal bad service", key_policy(json!({"Principal": {"Service": "ec2"}})), "invalid principals: 'Service: ec2'"),
        ("unknown operator", key_policy(json!({"Condition": {"StringEqualz": {"kms:CallerAccount": "111122223333"}}})), "Unknown condition operator: StringEqualz"),
        ("NullIfExists", key_policy(json!({"Condition": {"NullIfExists": {"k": "true"}}})), "Unknown condition operator: NullIfExists"),
        ("qualified Null", key_policy(json!({"Condition": {"ForAnyValue:Null": {"k": "true"}}})), "Unknown condition operator: ForAnyValue:Null"),
        ("unknown qualifier", key_policy(json!({"Condition": {"ForSomeValues:StringEquals": {"k": "v"}}})), "Unknown condition operator: ForSomeValues:StringEquals"),
        ("numeric value", key_policy(json!({"Condition": {"NumericLessThan": {"kms:RotationPeriodInDays": "abc"}}})), "Invalid value 'abc' for condition operator NumericLessThan: expected a number"),
        ("date value", key_policy(json!({"Condition": {"DateLessThan": {"aws:CurrentTime": "yesterday"}}})), "Invalid value 'yesterday' for condition operator DateLessThan"),
        ("bool value", key_policy(json!({"Condition": {"Bool": {"kms:GrantIsForAWSResource": "yes"}}})), "Invalid value 'yes' for condition operator Bool: expected true or false"),
        ("null value", key_policy(json!({"Condition": {"Null": {"k": "maybe"}}})), "Invalid value 'maybe' for condition operator Null"),
        ("ip value", key_policy(json!({"Condition": {"IpAddress": {"aws:SourceIp": "300.1.1.1/8"}}})), "Invalid value '300.1.1.1/8' for condition operator IpAddress"),
        ("condition value object", key_policy(json!({"Condition": {"StringEquals": {"k": {"a": 1}}}})), "the value of condition key k under StringEquals must be a string"),
        ("condition not an object", key_policy(json!({"Condition": ["StringEquals"]})), "Syntax errors in policy: Condition must be an object"),
        ("operator body not an object", key_policy(json!({"Condition": {"StringEquals": "k"}})), "condition operator StringEquals must map condition keys to values"),
        ("sid not a string", key_policy(json!({"Sid": 1})), "Syntax errors in policy: Sid must be a string"),
    ];
    for (name, text, want) in cases {
        let got = key_err(&text);
        assert!(got.contains(want), "{name}: got '{got}', want '{want}'");
    }
}

#[test]
fn size_limit() {
    let pad = "x".repeat(MAX_POLICY_BYTES);
    let text =
        json!({"Version": "2012-10-17", "Id": pad, "Statement": [stmt(json!({}))]}).to_string();
    let e = PolicyDocument::parse(&text).unwrap_err();
    assert!(
        e.to_string().starts_with("Policy exceeds 32768 bytes"),
        "{e}"
    );
    let k: crate::kms::KmsError = e.into();
    assert_eq!(k.code, crate::kms::ErrorCode::LimitExceededException);
    let k: crate::kms::KmsError = PolicyError::NoAction.into();
    assert_eq!(
        k.code,
        crate::kms::ErrorCode::MalformedPolicyDocumentException
    );
    assert_eq!(k.message, "Policy contains a statement with no action");
}

#[test]
fn identity_policies_refuse_principals_and_duplicate_sids() {
    let with_principal = key_policy(json!({}));
    assert_eq!(
        PolicyDocument::parse_identity_policy(&with_principal)
            .unwrap_err()
            .to_string(),
        "Policy document should not specify a principal."
    );
    let dup = json!({"Statement": [
        {"Sid": "A", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"},
        {"Sid": "A", "Effect": "Deny", "Action": "kms:Encrypt", "Resource": "*"}
    ]})
    .to_string();
    assert_eq!(
        PolicyDocument::parse_identity_policy(&dup).unwrap_err(),
        PolicyError::DuplicateSid("A".into())
    );
    let mixed = json!({"Statement": [
        {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"},
        stmt(json!({}))
    ]})
    .to_string();
    assert_eq!(
        PolicyDocument::parse(&mixed).unwrap_err(),
        PolicyError::NoPrincipal
    );
    assert_eq!(
        PolicyDocument::parse_identity_policy(&mixed).unwrap_err(),
        PolicyError::PrincipalInIdentityPolicy
    );
}

#[test]
fn accepted_forms() {
    let single =
        json!({"Version": "2008-10-17", "Id": "p1", "Statement": stmt(json!({"Sid": "Only"}))})
            .to_string();
    let d = PolicyDocument::parse(&single).unwrap();
    assert_eq!(
        (d.version(), d.id(), d.kind()),
        (Some("2008-10-17"), Some("p1"), PolicyKind::Resource)
    );
    assert_eq!(d.statements()[0].sid(), Some("Only"));
    assert_eq!(d.statements()[0].effect(), StatementEffect::Allow);

    let no_version = json!({"Statement": [{"Effect": "Deny", "NotAction": ["kms:Decrypt", "kms:Generate*"], "NotResource": "arn:aws:kms:*:111122223333:key/*"}]}).to_string();
    let d = PolicyDocument::parse(&no_version).unwrap();
    assert_eq!((d.version(), d.kind()), (None, PolicyKind::Identity));
    assert_eq!(d.statements()[0].effect(), StatementEffect::Deny);

    for principal in [
        json!("*"),
        json!({"AWS": "*"}),
        json!({"AWS": "111122223333"}),
        json!({"AWS": ["arn:aws:iam::111122223333:root", "arn:aws:iam::111122223333:user/alice"]}),
        json!({"AWS": "arn:aws:iam::111122223333:role/path/Admin"}),
        json!({"AWS": "arn:aws:sts::111122223333:assumed-role/Admin/session"}),
        json!({"Service": ["ec2.amazonaws.com", "autoscaling.amazonaws.com"]}),
        json!({"Federated": "cognito-identity.amazonaws.com"}),
        json!({"AWS": "arn:aws-cn:iam::111122223333:user/alice"}),
    ] {
        let text = key_policy(json!({"Principal": principal.clone()}));
        assert!(
            PolicyDocument::parse_key_policy(&text).is_ok(),
            "{principal}"
        );
        let not = key_policy(
            json!({"Principal": null, "NotPrincipal": principal.clone(), "Effect": "Deny"}),
        );
        assert!(
            PolicyDocument::parse_key_policy(&not).is_ok(),
            "NotPrincipal {principal}"
        );
    }

    let all_operators = json!({
        "StringEquals": {"a": "x"}, "StringNotEquals": {"a": ["x", "y"]},
        "StringEqualsIgnoreCase": {"a": "x"}, "StringNotEqualsIgnoreCase": {"a": "x"},
        "StringLike": {"a": "x*"}, "StringNotLike": {"a": "x?"},
        "ArnEquals": {"a": "arn:aws:iam::*:root"}, "ArnNotEquals": {"a": "arn:*"},
        "ArnLike": {"a": "arn:*"}, "ArnNotLike": {"a": "arn:*"},
        "Bool": {"a": true}, "Null": {"a": "false"},
        "NumericEquals": {"a": 1}, "NumericNotEquals": {"a": "2"}, "NumericLessThan": {"a": 1.5},
        "NumericLessThanEquals": {"a": 1}, "NumericGreaterThan": {"a": 1}, "NumericGreaterThanEquals": {"a": 1},
        "DateEquals": {"a": "2024-01-01T00:00:00Z"}, "DateNotEquals": {"a": 1704067200},
        "DateLessThan": {"a": "2024-01-01"}, "DateLessThanEquals": {"a": "2024-01-01T00:00:00+02:00"},
        "DateGreaterThan": {"a": "2024-01-01T00:00:00.123Z"}, "DateGreaterThanEquals": {"a": "1704067200"},
        "ForAnyValue:StringLike": {"b": ["x*"]}, "ForAllValues:StringEquals": {"b": []},
        "StringEqualsIfExists": {"c": "x"}, "ForAllValues:StringNotEqualsIfExists": {"c": "x"},
        "IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:db8::/32"]}, "NotIpAddress": {"aws:SourceIp": "10.0.0.1"},
        "BinaryEquals": {"d": "QmluYXJ5"}
    });
    let text = key_policy(json!({"Condition": all_operators}));
    let d = PolicyDocument::parse_key_policy(&text).unwrap();
    assert_eq!(d.statements()[0].conditions.len(), 31);
}

#[test]
fn no_panic_on_odd_input() {
    for text in [
        "", "null", "\"\"", "{}", "{\"Statement\": null}", "{\"Statement\": [{}]}",
        "{\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\", \"Condition\": {\"\": {}}}}",
        "{\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\", \"Condition\": {\"éIfExists\": {}}}}",
        "{\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\", \"Condition\": {\"ForAnyValue:\": {}}}}",
        "{\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\", \"Condition\": {\"DateEquals\": {\"k\": \"99999999999999999999\"}}}}",
        "{\"Statement\": {\"Effect\": \"Allow\", \"Action\": \"*\", \"Resource\": \"*\", \"Condition\": {\"IpAddress\": {\"k\": \"1.2.3.4/\"}}}}",
    ] {
        assert!(PolicyDocument::parse(text).is_err(), "accepted {text:?}");
    }
}

#[test]
fn shared_documents_are_kept_by_kind_and_whole_text() {
    let text = key_policy(json!({}));
    let a = PolicyDocument::shared_key_policy(&text).unwrap();
    let b = PolicyDocument::shared_key_policy(&text).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b), "parsed once");
    assert_eq!(*a, PolicyDocument::parse_key_policy(&text).unwrap());
    // The same text as an identity policy is still refused (it names
    // principals): the kind is part of the key.
    assert!(PolicyDocument::shared_identity_policy(&text).is_err());
    // One character more is another document.
    let other = key_policy(json!({"Sid": "x"}));
    let c = PolicyDocument::shared_key_policy(&other).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &c));
    assert_ne!(*a, *c);
    // A text that does not parse is refused every time, never kept.
    for _ in 0..2 {
        assert!(PolicyDocument::shared_key_policy("{\"Version\":").is_err());
    }
}
