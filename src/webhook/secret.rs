//! The self-managed certificate: a CA and a serving certificate kept in a Secret of the
//! operator's namespace, so every replica serves the same certificate and a restart reuses it.
//! Replicas start at once: the Secret is created by whoever is first (the others get 409 and
//! read it), and renewed with optimistic concurrency (a replica that loses the race reads the
//! winner's).
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::certs::{self, CA_RENEW_BEFORE, CERT_RENEW_BEFORE, CertError};
use super::{ApiError, bounded};

/// The CA bundle: the current CA's certificate, then the previous one during a CA rotation.
pub(crate) const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_NOT_AFTER: &str = "recur.dev/webhook-ca-not-after";
const CERT_NOT_AFTER: &str = "recur.dev/webhook-cert-not-after";
const NAMES: &str = "recur.dev/webhook-names";

/// Errors of keeping the Secret. None carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading Secret {0}: {1}")]
    Read(String, ApiError),
    #[error("writing Secret {0}: {1}")]
    Write(String, ApiError),
    #[error(transparent)]
    Issue(#[from] CertError),
    #[error("Secret {0} kept changing under other writers; trying again later")]
    Contended(String),
}

/// What the server needs: the serving certificate and key, and the CA bundle to publish.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Material {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_bundle: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").finish_non_exhaustive()
    }
}

/// What a Secret holds, each part only when usable.
#[derive(Default)]
struct Stored {
    ca_bundle: Option<String>,
    ca_key: Option<String>,
    ca_not_after: Option<DateTime<Utc>>,
    /// Certificate and key, present only when they belong together.
    serving: Option<(String, String)>,
    cert_not_after: Option<DateTime<Utc>>,
    names: Option<String>,
}

/// What to do about the Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// It is good for a while yet.
    Keep,
    /// A new serving certificate from the same CA: expiring, other names, or unusable.
    NewCert,
    /// A new CA (the old one expires within a year; it stays in the bundle, so servers still
    /// presenting a certificate it signed stay trusted), and a new serving certificate.
    RotateCa,
    /// Nothing usable: a new CA and certificate.
    Fresh,
}

/// The serving certificate's names in one canonical form (order and repeats do not matter).
fn names_key(names: &[String]) -> String {
    let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.join(",")
}

fn plan(stored: Option<&Stored>, names: &str, now: DateTime<Utc>) -> Plan {
    let Some(s) = stored else {
        return Plan::Fresh;
    };
    let (Some(_), Some(_), Some(ca_not_after)) = (&s.ca_bundle, &s.ca_key, s.ca_not_after) else {
        return Plan::Fresh;
    };
    if ca_not_after - now < CA_RENEW_BEFORE {
        return Plan::RotateCa;
    }
    let cert_fresh = s
        .cert_not_after
        .is_some_and(|t| t - now >= CERT_RENEW_BEFORE);
    if s.serving.is_none() || !cert_fresh || s.names.as_deref() != Some(names) {
        return Plan::NewCert;
    }
    Plan::Keep
}

fn decode(secret: &Secret) -> Stored {
    let empty = BTreeMap::new();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .filter(|s| !s.trim().is_empty())
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let instant = |key: &str| {
        annotations
            .get(key)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc))
    };
    let serving = text(TLS_CRT)
        .zip(text(TLS_KEY))
        .filter(|(crt, key)| super::tls::certified_key(crt.as_bytes(), key.as_bytes()).is_ok());
    Stored {
        ca_bundle: text(CA_CRT),
        // A CA key that does not parse cannot sign: as good as none.
        ca_key: text(CA_KEY).filter(|k| rcgen::KeyPair::from_pem(k).is_ok()),
        ca_not_after: instant(CA_NOT_AFTER),
        serving,
        cert_not_after: instant(CERT_NOT_AFTER),
        names: annotations.get(NAMES).cloned(),
    }
}

/// The first certificate of a PEM bundle (the current CA).
fn first_certificate(bundle: &str) -> Option<&str> {
    const END: &str = "-----END CERTIFICATE-----";
    bundle.find(END).map(|at| &bundle[..at + END.len()])
}

/// A Secret's contents and annotations, by key.
type Contents = (BTreeMap<String, String>, BTreeMap<String, String>);

/// The Secret's new contents for `plan`, from what is stored.
fn issue(
    plan: Plan,
    stored: Option<&Stored>,
    names: &[String],
    now: DateTime<Utc>,
) -> Result<Contents, CertError> {
    let stored_ca =
        stored.and_then(|s| Some((s.ca_bundle.clone()?, s.ca_key.clone()?, s.ca_not_after?)));
    let (bundle, ca_key, ca_not_after) = match (plan, stored_ca) {
        (Plan::NewCert | Plan::Keep, Some(ca)) => ca,
        (Plan::RotateCa, Some((old_bundle, _, _))) => {
            let ca = certs::new_ca(now)?;
            let old = first_certificate(&old_bundle).unwrap_or_default();
            (format!("{}{old}\n", ca.cert_pem), ca.key_pem, ca.not_after)
        }
        _ => {
            let ca = certs::new_ca(now)?;
            (ca.cert_pem, ca.key_pem, ca.not_after)
        }
    };
    let serving = certs::new_serving(&ca_key, names, now)?;
    let data = BTreeMap::from([
        (CA_CRT.to_string(), bundle),
        (CA_KEY.to_string(), ca_key),
        (TLS_CRT.to_string(), serving.cert_pem),
        (TLS_KEY.to_string(), serving.key_pem),
    ]);
    let annotations = BTreeMap::from([
        (CA_NOT_AFTER.to_string(), ca_not_after.to_rfc3339()),
        (CERT_NOT_AFTER.to_string(), serving.not_after.to_rfc3339()),
        (NAMES.to_string(), names_key(names)),
    ]);
    Ok((data, annotations))
}

fn material(data: &BTreeMap<String, String>) -> Material {
    let get = |k: &str| data.get(k).cloned().unwrap_or_default();
    Material {
        cert_pem: get(TLS_CRT),
        key_pem: get(TLS_KEY),
        ca_bundle: get(CA_CRT),
    }
}

/// The Secret as it should be: `existing`'s metadata (its resourceVersion makes the write fail
/// if another replica wrote first) with the new contents.
fn build(
    name: &str,
    existing: Option<&Secret>,
    data: &BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Secret {
    let mut metadata = existing
        .map(|s| s.metadata.clone())
        .unwrap_or_else(|| ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/name".to_string(), "recur".to_string()),
                (
                    "app.kubernetes.io/component".to_string(),
                    "webhook".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        });
    metadata.managed_fields = None;
    metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(annotations);
    Secret {
        metadata,
        // The type of an existing Secret cannot change; a new one is a TLS Secret.
        type_: existing
            .and_then(|s| s.type_.clone())
            .or_else(|| Some("kubernetes.io/tls".to_string())),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// Reads the Secret `name`, creating or renewing what it holds when needed, and returns what to
/// serve. `names` are the serving certificate's DNS names and IP addresses.
pub(crate) async fn ensure(
    api: &Api<Secret>,
    name: &str,
    names: &[String],
    now: DateTime<Utc>,
) -> Result<Material, SecretError> {
    let wanted = names_key(names);
    let what = || format!("{}/{name}", api.namespace().unwrap_or_default());
    for _ in 0..3 {
        let existing = bounded(api.get_opt(name))
            .await
            .map_err(|e| SecretError::Read(what(), e))?;
        let stored = existing.as_ref().map(decode);
        let plan = plan(stored.as_ref(), &wanted, now);
        if plan == Plan::Keep
            && let Some(s) = &stored
            && let (Some(bundle), Some((cert, key))) = (&s.ca_bundle, &s.serving)
        {
            return Ok(Material {
                cert_pem: cert.clone(),
                key_pem: key.clone(),
                ca_bundle: bundle.clone(),
            });
        }
        let (data, annotations) = issue(plan, stored.as_ref(), names, now)?;
        let secret = build(name, existing.as_ref(), &data, annotations);
        let pp = PostParams {
            field_manager: Some("recur".to_string()),
            ..PostParams::default()
        };
        let written = match &existing {
            None => bounded(api.create(&pp, &secret)).await,
            Some(_) => bounded(api.replace(name, &pp, &secret)).await,
        };
        match written {
            Ok(_) => {
                tracing::info!(
                    secret = %what(),
                    ?plan,
                    names = %wanted,
                    valid_until = annotations_of(&secret, CERT_NOT_AFTER),
                    "webhook certificate issued"
                );
                return Ok(material(&data));
            }
            // Another replica created or renewed it first: use theirs.
            Err(ApiError::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(SecretError::Write(what(), e)),
        }
    }
    Err(SecretError::Contended(what()))
}

fn annotations_of(secret: &Secret, key: &str) -> String {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key).cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use chrono::Duration;

    fn names() -> Vec<String> {
        vec!["recur.ops.svc".to_string(), "127.0.0.1".to_string()]
    }

    fn stored_at(now: DateTime<Utc>) -> (Secret, BTreeMap<String, String>) {
        let (data, ann) = issue(Plan::Fresh, None, &names(), now).unwrap();
        (build("tls", None, &data, ann), data)
    }

    #[test]
    fn a_fresh_secret_is_kept_until_its_certificate_nears_its_end() {
        let now = Utc::now();
        assert_eq!(plan(None, &names_key(&names()), now), Plan::Fresh);
        let (secret, _) = stored_at(now);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        let s = decode(&secret);
        let key = names_key(&names());
        assert_eq!(plan(Some(&s), &key, now), Plan::Keep);
        // Order and repeats of the names do not matter; another name does.
        let reordered = vec![
            "127.0.0.1".into(),
            "recur.ops.svc".into(),
            "127.0.0.1".into(),
        ];
        assert_eq!(plan(Some(&s), &names_key(&reordered), now), Plan::Keep);
        assert_eq!(plan(Some(&s), "recur.other.svc", now), Plan::NewCert);
        assert_eq!(
            plan(Some(&s), &key, now + Duration::days(250)),
            Plan::NewCert
        );
        assert_eq!(
            plan(Some(&s), &key, now + Duration::days(3650 - 300)),
            Plan::RotateCa
        );
    }

    #[test]
    fn broken_parts_are_replaced_and_the_rest_kept() {
        let now = Utc::now();
        let (mut secret, data) = stored_at(now);
        let key = names_key(&names());
        // A serving key of another certificate: a new certificate, the same CA.
        let (_, other) = stored_at(now);
        let mut map = secret.data.clone().unwrap();
        map.insert(
            TLS_KEY.into(),
            ByteString(other[TLS_KEY].clone().into_bytes()),
        );
        secret.data = Some(map.clone());
        let s = decode(&secret);
        assert_eq!(plan(Some(&s), &key, now), Plan::NewCert);
        let (renewed, _) = issue(Plan::NewCert, Some(&s), &names(), now).unwrap();
        assert_eq!(renewed[CA_CRT], data[CA_CRT]);
        assert_eq!(renewed[CA_KEY], data[CA_KEY]);
        assert_ne!(renewed[TLS_CRT], data[TLS_CRT]);
        // No CA key: everything anew.
        map.remove(CA_KEY);
        secret.data = Some(map);
        assert_eq!(plan(Some(&decode(&secret)), &key, now), Plan::Fresh);
        // No annotations: the expiry is unknown, so everything anew.
        let (mut secret, _) = stored_at(now);
        secret.metadata.annotations = None;
        assert_eq!(plan(Some(&decode(&secret)), &key, now), Plan::Fresh);
    }

    #[test]
    fn a_ca_rotation_keeps_the_old_ca_in_the_bundle() {
        let now = Utc::now();
        let (secret, data) = stored_at(now);
        let later = now + Duration::days(3650 - 300);
        let s = decode(&secret);
        let (rotated, ann) = issue(Plan::RotateCa, Some(&s), &names(), later).unwrap();
        let old_ca = data[CA_CRT].trim();
        assert!(
            rotated[CA_CRT].trim_end().ends_with(old_ca),
            "the old CA follows the new"
        );
        assert!(!rotated[CA_CRT].starts_with(old_ca));
        assert_ne!(rotated[CA_KEY], data[CA_KEY]);
        // The next rotation drops the oldest: the bundle holds at most two.
        let s = decode(&build("tls", Some(&secret), &rotated, ann));
        assert_eq!(plan(Some(&s), &names_key(&names()), later), Plan::Keep);
        let (again, _) = issue(Plan::RotateCa, Some(&s), &names(), later).unwrap();
        assert_eq!(again[CA_CRT].matches("BEGIN CERTIFICATE").count(), 2);
        assert!(!again[CA_CRT].contains(old_ca));
    }

    #[test]
    fn an_existing_secrets_metadata_and_type_are_kept() {
        let now = Utc::now();
        let (mut existing, data) = stored_at(now);
        existing.metadata.resource_version = Some("42".into());
        existing.type_ = Some("Opaque".into());
        let (data2, ann) = issue(Plan::NewCert, Some(&decode(&existing)), &names(), now).unwrap();
        let built = build("tls", Some(&existing), &data2, ann);
        assert_eq!(built.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(built.type_.as_deref(), Some("Opaque"));
        assert_eq!(material(&data).ca_bundle, data[CA_CRT]);
        assert!(!format!("{:?}", material(&data)).contains("PRIVATE"));
    }
}
