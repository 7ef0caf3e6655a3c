//! The validating admission webhook (`POST /validate` over HTTPS): a task, reminder or
//! TenantPolicy that breaks the tenancy policy is refused at `kubectl apply`, with the words of
//! [`crate::tenancy::Tenancy::review`]. It serves on every replica (admission is not the
//! leader's work) and answers only once the policy caches are loaded.
//!
//! The serving certificate comes from files (`--webhook-cert-dir`, e.g. cert-manager's) or is
//! managed by the operator itself: a CA and certificate in a Secret, the CA published as the
//! `caBundle` of the webhook configuration.
mod bundle;
mod certs;
mod files;
mod review;
mod secret;
mod serve;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionRequest;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use bundle::BundleError;
pub use certs::CertError;
pub use files::FilesError;
pub use secret::SecretError;
pub use tls::TlsError;

use crate::server::Health;
use crate::tenancy::{Denial, Tenancy};

/// Readiness waits for this: a replica without a certificate would fail the API server's calls.
const READY_KEY: &str = "admission webhook certificate";

/// Flags of the webhook (part of `recur run`).
#[derive(Args, Debug, Clone, Default)]
pub struct WebhookArgs {
    /// Address of the validating admission webhook's HTTPS server (`POST /validate`), e.g.
    /// `0.0.0.0:9443`. Unset: no webhook.
    #[arg(long, env = "RECUR_WEBHOOK_ADDR")]
    pub webhook_addr: Option<SocketAddr>,
    /// Directory holding the serving certificate as `tls.crt` and `tls.key` (cert-manager's
    /// Secret mounted there), re-read when they change. Unset: the operator issues its own
    /// certificate and keeps it in `--webhook-secret`.
    #[arg(long, env = "RECUR_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,
    /// Secret holding the self-managed CA and serving certificate.
    #[arg(
        long,
        env = "RECUR_WEBHOOK_SECRET",
        default_value = "recur-webhook-tls"
    )]
    pub webhook_secret: String,
    /// Namespace of that Secret and of the webhook's Service (default: POD_NAMESPACE, else the
    /// kubeconfig's namespace).
    #[arg(long, env = "RECUR_WEBHOOK_NAMESPACE")]
    pub webhook_namespace: Option<String>,
    /// Name of the webhook's Service: the self-managed certificate is valid for `<svc>`,
    /// `<svc>.<ns>`, `<svc>.<ns>.svc` and `<svc>.<ns>.svc.cluster.local`.
    #[arg(long, env = "RECUR_WEBHOOK_SERVICE")]
    pub webhook_service: Option<String>,
    /// A further DNS name or IP address of the self-managed certificate (repeatable).
    #[arg(
        long = "webhook-host",
        env = "RECUR_WEBHOOK_HOSTS",
        value_delimiter = ','
    )]
    pub webhook_hosts: Vec<String>,
    /// ValidatingWebhookConfiguration whose webhooks get the self-managed CA as `caBundle`.
    #[arg(long, env = "RECUR_WEBHOOK_CONFIGURATION", default_value = "recur")]
    pub webhook_configuration: String,
    /// PEM file of the CA that signs the API server's client certificate for webhooks (its
    /// AdmissionConfiguration's kubeconfig): only a client presenting a certificate it signed
    /// is answered. Unset: any client that reaches the port is answered, and a review names
    /// facts of the namespace it claims (a task's schedule, a policy's rules).
    #[arg(long, env = "RECUR_WEBHOOK_CLIENT_CA")]
    pub webhook_client_ca: Option<PathBuf>,
}

/// How an API call of the webhook failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Api(Box<kube::core::Status>),
    #[error("{0}")]
    Client(kube::Error),
    #[error("no answer within {}s", API_TIMEOUT.as_secs())]
    Timeout,
    #[error("cannot encode the request: {0}")]
    Encode(serde_json::Error),
}

/// Errors of starting the webhook.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("could not listen on {addr} for the admission webhook: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the self-managed webhook certificate needs a name: set --webhook-service or --webhook-host (or --webhook-cert-dir)"
    )]
    NoNames,
    #[error("cannot read --webhook-client-ca {path}: {source}")]
    ClientCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Every API call of the webhook's certificate upkeep is bounded by this.
const API_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate (files or Secret) and the caBundle are checked.
const REFRESH: Duration = Duration::from_secs(60);
/// First retry after a failure; doubles up to [`REFRESH`].
const RETRY: Duration = Duration::from_secs(1);

async fn bounded<T>(call: impl Future<Output = Result<T, kube::Error>>) -> Result<T, ApiError> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(kube::Error::Api(status))) => Err(ApiError::Api(status)),
        Ok(Err(err)) => Err(ApiError::Client(err)),
        Err(_) => Err(ApiError::Timeout),
    }
}

/// The certificate's DNS names and IP addresses: the Service's four forms, then the hosts.
fn names(args: &WebhookArgs, namespace: &str) -> Vec<String> {
    let mut names = vec![];
    if let Some(svc) = &args.webhook_service {
        names.extend([
            svc.clone(),
            format!("{svc}.{namespace}"),
            format!("{svc}.{namespace}.svc"),
            format!("{svc}.{namespace}.svc.cluster.local"),
        ]);
    }
    names.extend(args.webhook_hosts.iter().filter(|h| !h.is_empty()).cloned());
    names
}

/// The namespace of the webhook's Secret and Service: the flag, else POD_NAMESPACE, else the
/// kubeconfig's.
pub fn namespace(args: &WebhookArgs, default_namespace: &str) -> String {
    args.webhook_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| default_namespace.to_string())
}

/// Decides with the tenancy checks once their caches are loaded.
#[derive(Clone)]
struct Gate {
    tenancy: Tenancy,
    synced: Arc<AtomicBool>,
}

impl Gate {
    fn new(tenancy: Tenancy) -> Gate {
        let synced = Arc::new(AtomicBool::new(false));
        let (flag, view) = (synced.clone(), tenancy.clone());
        tokio::spawn(async move {
            match view.wait_synced().await {
                Ok(()) => {
                    flag.store(true, Ordering::Release);
                    tracing::info!("webhook: policy caches loaded, answering admission reviews");
                }
                // Their watches ended: every review is refused from now on (fail closed).
                Err(err) => tracing::error!("webhook: the policy caches will never load: {err}"),
            }
        });
        Gate { tenancy, synced }
    }
}

impl review::Admit for Gate {
    fn ready(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    async fn review(&self, request: &AdmissionRequest<DynamicObject>) -> Result<(), Denial> {
        self.tenancy.review(request).await
    }
}

/// Where the serving certificate comes from.
enum Source {
    Files(files::CertDir),
    Managed(Box<Managed>),
}

/// The self-managed certificate: the Secret it is kept in, the configuration it is published to.
struct Managed {
    secrets: Api<Secret>,
    secret: String,
    configs: Api<ValidatingWebhookConfiguration>,
    configuration: String,
    names: Vec<String>,
    /// What is served now, so an unchanged Secret is not loaded again.
    served: Option<secret::Material>,
}

/// Starts the webhook when `--webhook-addr` is set: binds now (a taken port fails the start),
/// then serves until `shutdown` completes. The returned task ends after the drain. `health`
/// is not ready until a certificate is loaded.
pub async fn start(
    args: &WebhookArgs,
    client: Client,
    namespace: &str,
    tenancy: Tenancy,
    health: &Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Option<JoinHandle<()>>, WebhookError> {
    let Some(addr) = args.webhook_addr else {
        return Ok(None);
    };
    let source = match &args.webhook_cert_dir {
        Some(dir) => Source::Files(files::CertDir::new(dir)),
        None => {
            let names = names(args, namespace);
            if names.is_empty() {
                return Err(WebhookError::NoNames);
            }
            Source::Managed(Box::new(Managed {
                secrets: Api::namespaced(client.clone(), namespace),
                secret: args.webhook_secret.clone(),
                configs: Api::all(client),
                configuration: args.webhook_configuration.clone(),
                names,
                served: None,
            }))
        }
    };
    let client_ca = match &args.webhook_client_ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| WebhookError::ClientCa {
                path: path.clone(),
                source,
            })?;
            Some(tls::client_roots(&pem)?)
        }
        None => None,
    };
    let certs = Arc::new(tls::Certificates::default());
    let config = tls::server_config(certs.clone(), client_ca)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| WebhookError::Bind { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    tracing::info!(
        addr = %bound,
        client_certificates = args.webhook_client_ca.is_some(),
        "serving the admission webhook (POST /validate)"
    );
    let router = review::router(Gate::new(tenancy));
    health.expect_kind(READY_KEY);
    let upkeep = tokio::spawn(keep(source, certs, health.clone()));
    Ok(Some(tokio::spawn(async move {
        serve::serve(listener, config, router, shutdown).await;
        upkeep.abort();
    })))
}

/// Keeps the served certificate current: loads it at once (retrying quickly until it works),
/// then checks every [`REFRESH`].
async fn keep(mut source: Source, certs: Arc<tls::Certificates>, health: Health) {
    let mut retry = RETRY;
    loop {
        let outcome = match &mut source {
            Source::Files(dir) => match dir.reload(&certs) {
                Ok(true) => {
                    tracing::info!("webhook: certificate loaded from files");
                    Ok(())
                }
                Ok(false) => Ok(()),
                Err(err) => Err(err.to_string()),
            },
            Source::Managed(managed) => managed.round(&certs).await,
        };
        // Ready once a certificate is served, even while its CA is not published yet: the
        // replicas of a rolling update must not wait for one another.
        if certs.is_loaded() {
            health.set_synced(READY_KEY);
        }
        let wait = match outcome {
            Ok(()) => {
                retry = RETRY;
                REFRESH
            }
            Err(err) => {
                tracing::warn!(
                    "webhook certificate: {err}; retrying in {}s",
                    retry.as_secs()
                );
                let wait = retry;
                retry = (retry * 2).min(REFRESH);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

impl Managed {
    /// One round of upkeep: the Secret (created or renewed when needed), the served
    /// certificate, the caBundle.
    async fn round(&mut self, certs: &tls::Certificates) -> Result<(), String> {
        let material = secret::ensure(&self.secrets, &self.secret, &self.names, chrono::Utc::now())
            .await
            .map_err(|e| e.to_string())?;
        if self.served.as_ref() != Some(&material) {
            certs
                .set(material.cert_pem.as_bytes(), material.key_pem.as_bytes())
                .map_err(|e| format!("Secret {}: {e}", self.secret))?;
            tracing::info!(secret = %self.secret, "webhook: serving the certificate of the Secret");
            self.served = Some(material.clone());
        }
        let changed = bundle::publish(&self.configs, &self.configuration, &material.ca_bundle)
            .await
            .map_err(|e| e.to_string())?;
        if changed > 0 {
            tracing::info!(
                configuration = %self.configuration,
                webhooks = changed,
                "webhook: caBundle published"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
