//! Issuing the self-managed certificates (rcgen, ECDSA P-256): a CA whose certificate becomes
//! the webhook configuration's `caBundle`, and the serving certificate it signs. Pure: the
//! caller decides when, and stores the results.
use chrono::{DateTime, Datelike, Duration, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};

/// How long a new CA is valid. Long, since replacing it means a new `caBundle`.
pub(crate) const CA_VALIDITY: Duration = Duration::days(3650);
/// A CA with less than this left is replaced (the old one stays in the bundle meanwhile).
pub(crate) const CA_RENEW_BEFORE: Duration = Duration::days(365);
/// How long a serving certificate is valid.
pub(crate) const CERT_VALIDITY: Duration = Duration::days(365);
/// A serving certificate with less than this left is replaced.
pub(crate) const CERT_RENEW_BEFORE: Duration = Duration::days(120);

const CA_COMMON_NAME: &str = "recur admission webhook CA";

/// Errors of issuing a certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen's errors name no key material.
    #[error("cannot issue the webhook certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("the webhook certificate needs at least one DNS name or IP address")]
    NoNames,
}

/// A new CA: its certificate and key (PEM), and when it expires.
pub(crate) struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: DateTime<Utc>,
}

/// A serving certificate signed by the CA, its key (PEM), and when it expires.
pub(crate) struct Serving {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: DateTime<Utc>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// The CA's parameters. Signing with a stored CA key rebuilds them: the issuer name and key
/// identifier of what it signs come from these and the key, so they must not change.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Sets the validity from a day before `now` (clocks differ) to `now + validity`, whole days.
fn validity(
    params: &mut CertificateParams,
    now: DateTime<Utc>,
    validity: Duration,
) -> DateTime<Utc> {
    let day = |t: DateTime<Utc>| date_time_ymd(t.year(), t.month() as u8, t.day() as u8);
    let start = now - Duration::days(1);
    let end = now + validity;
    params.not_before = day(start);
    params.not_after = day(end);
    end.date_naive()
        .and_hms_opt(0, 0, 0)
        .map_or(end, |midnight| midnight.and_utc())
}

/// A new self-signed CA.
pub(crate) fn new_ca(now: DateTime<Utc>) -> Result<Ca, CertError> {
    let key = KeyPair::generate()?;
    let mut params = ca_params();
    let not_after = validity(&mut params, now, CA_VALIDITY);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// A new serving certificate for `names` (DNS names; IP addresses become IP SANs), signed by the
/// CA whose key is `ca_key_pem`.
pub(crate) fn new_serving(
    ca_key_pem: &str,
    names: &[String],
    now: DateTime<Utc>,
) -> Result<Serving, CertError> {
    let first = names.first().ok_or(CertError::NoNames)?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    signed(ca_key_pem, params, first, now)
}

/// A client certificate signed by the CA, for tests of client authentication.
#[cfg(test)]
pub(crate) fn new_client(
    ca_key_pem: &str,
    common_name: &str,
    now: DateTime<Utc>,
) -> Result<Serving, CertError> {
    let mut params = CertificateParams::new(vec![])?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    signed(ca_key_pem, params, common_name, now)
}

/// `params` named `common_name`, valid for [`CERT_VALIDITY`], with a new key, signed by the CA
/// whose key is `ca_key_pem`.
fn signed(
    ca_key_pem: &str,
    mut params: CertificateParams,
    common_name: &str,
    now: DateTime<Utc>,
) -> Result<Serving, CertError> {
    let issuer = Issuer::new(ca_params(), KeyPair::from_pem(ca_key_pem)?);
    let key = KeyPair::generate()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.use_authority_key_identifier_extension = true;
    let not_after = validity(&mut params, now, CERT_VALIDITY);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Serving {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use tokio_rustls::rustls::RootCertStore;
    use tokio_rustls::rustls::client::WebPkiServerVerifier;
    use tokio_rustls::rustls::client::danger::ServerCertVerifier;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    fn verify(ca_pem: &str, cert_pem: &str, name: &str, at: DateTime<Utc>) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
            .build()
            .unwrap();
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.timestamp() as u64));
        verifier
            .verify_server_cert(
                &cert,
                &[],
                &ServerName::try_from(name.to_string()).unwrap(),
                &[],
                at,
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_serving_certificate_is_trusted_through_the_ca_for_its_names_only() {
        let now = Utc::now();
        let ca = new_ca(now).unwrap();
        let names = vec!["recur.ops.svc".to_string(), "127.0.0.1".to_string()];
        let cert = new_serving(&ca.key_pem, &names, now).unwrap();
        verify(&ca.cert_pem, &cert.cert_pem, "recur.ops.svc", now).unwrap();
        verify(&ca.cert_pem, &cert.cert_pem, "127.0.0.1", now).unwrap();
        let err = verify(&ca.cert_pem, &cert.cert_pem, "recur.other.svc", now).unwrap_err();
        assert!(err.contains("not valid for name"), "{err}");
        // Another CA does not vouch for it.
        let other = new_ca(now).unwrap();
        verify(&other.cert_pem, &cert.cert_pem, "recur.ops.svc", now).unwrap_err();
        // A bundle with the old CA too still verifies (a CA rotation in progress).
        let bundle = format!("{}{}", other.cert_pem, ca.cert_pem);
        verify(&bundle, &cert.cert_pem, "recur.ops.svc", now).unwrap();
    }

    #[test]
    fn validity_covers_clock_skew_and_ends_when_recorded() {
        let now = Utc::now();
        let ca = new_ca(now).unwrap();
        let cert = new_serving(&ca.key_pem, &["a.b.svc".to_string()], now).unwrap();
        assert!(cert.not_after > now + CERT_VALIDITY - Duration::days(1));
        assert!(cert.not_after <= now + CERT_VALIDITY);
        assert!(ca.not_after > now + CA_VALIDITY - Duration::days(1));
        // Valid from a day before it was issued, and no longer after its recorded end.
        verify(
            &ca.cert_pem,
            &cert.cert_pem,
            "a.b.svc",
            now - Duration::hours(20),
        )
        .unwrap();
        verify(
            &ca.cert_pem,
            &cert.cert_pem,
            "a.b.svc",
            cert.not_after + Duration::hours(1),
        )
        .unwrap_err();
    }

    #[test]
    fn no_names_is_an_error() {
        let now = Utc::now();
        let ca = new_ca(now).unwrap();
        assert!(matches!(
            new_serving(&ca.key_pem, &[], now),
            Err(CertError::NoNames)
        ));
        let debug = format!("{ca:?}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    }
}
