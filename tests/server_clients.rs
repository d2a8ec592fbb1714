//! stub
#[test]
fn stub() {
    let _ = aws_sdk_kms::config::Builder::new();
    let _ = aws_smithy_http_client::Builder::new().build_http();
    let _ = aws_credential_types::Credentials::from_keys("a", "b", None);
}
