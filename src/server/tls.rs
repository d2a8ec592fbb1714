//! TLS for the KMS API (rustls with the ring provider): the server's
//! identity from PEM files, and the trust roots of the client.
//!
//! Decrypt and GenerateDataKey responses carry plaintext keys, so a KMS
//! reached over a network should be served over TLS.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::secret::SecretBytes;

/// System CA bundles tried when a client is given no CA certificate.
pub const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The certificate chain and private key the server presents.
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsIdentity([REDACTED])")
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(cert_chain: &Path, private_key: &Path) -> io::Result<Self> {
        let certs = std::fs::read(cert_chain).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot read the TLS certificate {}: {e}",
                    cert_chain.display()
                ),
            )
        })?;
        let key = SecretBytes::new(std::fs::read(private_key).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot read the TLS private key {}: {e}",
                    private_key.display()
                ),
            )
        })?);
        Self::from_pem(&certs, &key).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "TLS certificate {} / key {}: {e}",
                    cert_chain.display(),
                    private_key.display()
                ),
            )
        })
    }

    /// Builds the identity from PEM text.
    pub fn from_pem(cert_chain_pem: &[u8], private_key_pem: &SecretBytes) -> io::Result<Self> {
        let certs = parse_certificates(cert_chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(private_key_pem.expose())
            .map_err(|e| invalid(format!("no usable PEM private key: {e}")))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS setup failed: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| {
                invalid(format!(
                    "the certificate and key do not form an identity: {e}"
                ))
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
        })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// The crypto provider of both sides.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// All certificates of a PEM text; at least one.
pub fn parse_certificates(pem: &[u8]) -> io::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) found",
        ));
    }
    Ok(certs)
}

/// The first system CA bundle that exists, as PEM.
pub fn system_ca_bundle() -> Option<Vec<u8>> {
    SYSTEM_CA_BUNDLES.iter().find_map(|p| std::fs::read(p).ok())
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_is_refused_with_a_reason() {
        let e = parse_certificates(b"not pem").unwrap_err();
        assert!(e.to_string().contains("no PEM certificate"), "{e}");
        let e = TlsIdentity::from_pem(b"", &SecretBytes::from_slice(b"")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let e = TlsIdentity::from_pem_files(Path::new("/nonexistent/cert.pem"), Path::new("/k"))
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }
}
