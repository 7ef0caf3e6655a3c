//! The webhook's TLS: a rustls server configuration (the `ring` provider kube uses) whose
//! certificate can be replaced while it serves, so renewals need no restart.
use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

/// Errors of loading a certificate or building the TLS configuration. None of them carries key
/// material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate holds no PEM certificate")]
    NoCertificate,
    #[error("the certificate is not valid PEM: {0}")]
    Certificate(String),
    #[error("the key is not a PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    Key,
    #[error("the key cannot sign: {0}")]
    Unusable(rustls::Error),
    #[error("the key does not belong to the certificate: {0}")]
    Mismatch(rustls::Error),
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
    #[error("the client CA holds no PEM certificate")]
    NoClientCa,
    #[error("the client CA is not valid PEM: {0}")]
    ClientCaPem(String),
    #[error("the client CA is not a usable CA certificate: {0}")]
    ClientCa(String),
}

/// The certificate being served; empty until the first one is loaded (handshakes fail until
/// then, and the API server's call fails closed).
#[derive(Debug, Default)]
pub(crate) struct Certificates {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl Certificates {
    /// Serves `cert_pem` (the serving certificate, then any intermediates) with `key_pem` from
    /// now on.
    pub(crate) fn set(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let key = certified_key(cert_pem, key_pem)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(key));
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub(crate) fn is_loaded(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM chain and key into what rustls serves, checking that they belong together.
pub(crate) fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    // The key's parse error is not shown: it could quote the key's text.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::Key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(TlsError::Unusable)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(TlsError::Mismatch)?;
    Ok(certified)
}

/// The CAs of a PEM bundle, as roots a client certificate must chain to.
pub(crate) fn client_roots(pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| TlsError::ClientCaPem(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| TlsError::ClientCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoClientCa);
    }
    Ok(roots)
}

/// The server configuration: TLS 1.2 and 1.3, HTTP/1.1 (what the API server's webhook client
/// speaks when HTTP/2 is not offered), the certificate from `certs`; with `client_roots`, a
/// handshake without a client certificate chaining to them fails.
pub(crate) fn server_config(
    certs: Arc<Certificates>,
    client_roots: Option<RootCertStore>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(certs);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::webhook::certs;

    #[test]
    fn a_key_of_another_certificate_is_refused_and_errors_show_no_key() {
        let now = chrono::Utc::now();
        let ca = certs::new_ca(now).unwrap();
        let a = certs::new_serving(&ca.key_pem, &["a.svc".into()], now).unwrap();
        let b = certs::new_serving(&ca.key_pem, &["b.svc".into()], now).unwrap();
        certified_key(a.cert_pem.as_bytes(), a.key_pem.as_bytes()).unwrap();
        let err = certified_key(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch(_)), "{err}");
        let err = certified_key(b"", a.key_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate), "{err}");
        let garbled = a
            .key_pem
            .replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\n!!");
        let err = certified_key(a.cert_pem.as_bytes(), garbled.as_bytes()).unwrap_err();
        assert!(!err.to_string().contains("!!"), "{err}");
        let store = Certificates::default();
        assert!(!store.is_loaded());
        store
            .set(a.cert_pem.as_bytes(), a.key_pem.as_bytes())
            .unwrap();
        assert!(store.is_loaded());
        assert!(
            store
                .set(a.cert_pem.as_bytes(), b.key_pem.as_bytes())
                .is_err()
        );
        assert!(
            store.is_loaded(),
            "a failed load keeps the certificate served"
        );
    }
}
