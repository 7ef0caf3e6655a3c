//! The HTTPS server in process: a real TLS client that trusts only the webhook's CA, raw
//! HTTP/1.1 over it, certificate replacement while serving, and a drained shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::review::Admit;
use super::*;

#[derive(Clone)]
struct AllowAll;

impl Admit for AllowAll {
    fn ready(&self) -> bool {
        true
    }
    async fn review(&self, _request: &AdmissionRequest<DynamicObject>) -> Result<(), Denial> {
        Ok(())
    }
}

/// A TLS client trusting `ca_pem`, presenting `identity` (a certificate and its key, PEM) when
/// given.
fn client(ca_pem: &str, identity: Option<&certs::Serving>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            config.with_client_auth_cert(chain, key).unwrap()
        }
        None => config.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// POSTs `body` to `/validate` over TLS; `Err` when the handshake fails.
async fn post(port: u16, ca_pem: &str, body: &str) -> Result<String, std::io::Error> {
    post_as(port, ca_pem, None, body).await
}

/// [`post`], presenting `identity` as the client's certificate.
async fn post_as(
    port: u16,
    ca_pem: &str,
    identity: Option<&certs::Serving>,
    body: &str,
) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = client(ca_pem, identity).connect(name, tcp).await?;
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

/// Serves `config` on a free loopback port: the port, the stop switch, the server's task.
async fn spawn_server(
    config: Arc<tokio_rustls::rustls::ServerConfig>,
) -> (
    u16,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve::serve(
        listener,
        config,
        review::router(AllowAll),
        async move {
            let _ = stopped.await;
        },
    ));
    (port, stop, server)
}

#[tokio::test]
async fn serves_reviews_over_tls_and_switches_certificates_without_a_restart() {
    let now = chrono::Utc::now();
    let names = vec!["127.0.0.1".to_string()];
    let ca1 = certs::new_ca(now).unwrap();
    let cert1 = certs::new_serving(&ca1.key_pem, &names, now).unwrap();
    let store = Arc::new(tls::Certificates::default());
    let config = tls::server_config(store.clone(), None).unwrap();
    let (port, stop, server) = spawn_server(config).await;

    // No certificate yet: the handshake fails (the API server's call fails closed).
    assert!(post(port, &ca1.cert_pem, "{}").await.is_err());

    store
        .set(cert1.cert_pem.as_bytes(), cert1.key_pem.as_bytes())
        .unwrap();
    let answer = post(port, &ca1.cert_pem, "not json").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let review = serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "recur.dev", "version": "v1alpha1", "kind": "Reminder"},
            "resource": {"group": "recur.dev", "version": "v1alpha1", "resource": "reminders"},
            "operation": "CREATE", "userInfo": {}, "name": "r", "namespace": "n",
            "object": {"apiVersion": "recur.dev/v1alpha1", "kind": "Reminder", "metadata": {"name": "r"}}
        }
    });
    let answer = post(port, &ca1.cert_pem, &review.to_string())
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#""uid":"u-1""#) && answer.contains(r#""allowed":true"#),
        "{answer}"
    );

    // A renewal from another CA: new connections get the new certificate at once.
    let ca2 = certs::new_ca(now).unwrap();
    let cert2 = certs::new_serving(&ca2.key_pem, &names, now).unwrap();
    store
        .set(cert2.cert_pem.as_bytes(), cert2.key_pem.as_bytes())
        .unwrap();
    assert!(post(port, &ca1.cert_pem, "{}").await.is_err());
    let answer = post(port, &ca2.cert_pem, "{}").await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(15), server)
        .await
        .expect("the server stops after shutdown")
        .unwrap();
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
}

/// With `--webhook-client-ca`, only a client presenting a certificate that CA signed (the API
/// server, through its AdmissionConfiguration) gets an answer: anyone else who reaches the
/// port could otherwise ask about any namespace (a review reads the task a Backfill names and
/// the policies of the namespace the request claims).
#[tokio::test]
async fn with_a_client_ca_only_clients_it_signed_are_answered() {
    let now = chrono::Utc::now();
    let ca = certs::new_ca(now).unwrap();
    let serving = certs::new_serving(&ca.key_pem, &["127.0.0.1".to_string()], now).unwrap();
    let apiservers = certs::new_ca(now).unwrap();
    let apiserver = certs::new_client(&apiservers.key_pem, "kube-apiserver", now).unwrap();
    let stranger_ca = certs::new_ca(now).unwrap();
    let stranger = certs::new_client(&stranger_ca.key_pem, "kube-apiserver", now).unwrap();
    let store = Arc::new(tls::Certificates::default());
    store
        .set(serving.cert_pem.as_bytes(), serving.key_pem.as_bytes())
        .unwrap();
    let roots = tls::client_roots(apiservers.cert_pem.as_bytes()).unwrap();
    let config = tls::server_config(store, Some(roots)).unwrap();
    let (port, stop, server) = spawn_server(config).await;
    let answered = |result: &Result<String, std::io::Error>| matches!(result, Ok(answer) if answer.starts_with("HTTP/1.1"));

    let signed = post_as(port, &ca.cert_pem, Some(&apiserver), "{}").await;
    assert!(
        matches!(&signed, Ok(answer) if answer.starts_with("HTTP/1.1 400")),
        "{signed:?}"
    );
    let anonymous = post(port, &ca.cert_pem, "{}").await;
    assert!(
        !answered(&anonymous),
        "answered without a certificate: {anonymous:?}"
    );
    let other = post_as(port, &ca.cert_pem, Some(&stranger), "{}").await;
    assert!(!answered(&other), "answered another CA's client: {other:?}");

    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(15), server)
        .await
        .expect("the server stops after shutdown")
        .unwrap();
}

#[test]
fn a_client_ca_without_a_certificate_is_refused_by_name() {
    assert!(matches!(
        tls::client_roots(b"no PEM here"),
        Err(tls::TlsError::NoClientCa)
    ));
}

#[test]
fn the_certificate_names_the_service_in_all_four_forms_then_the_hosts() {
    let args = WebhookArgs {
        webhook_service: Some("recur-webhook".into()),
        webhook_hosts: vec!["127.0.0.1".into(), "".into(), "webhook.example".into()],
        ..WebhookArgs::default()
    };
    assert_eq!(
        names(&args, "ops"),
        vec![
            "recur-webhook",
            "recur-webhook.ops",
            "recur-webhook.ops.svc",
            "recur-webhook.ops.svc.cluster.local",
            "127.0.0.1",
            "webhook.example",
        ]
    );
    assert!(names(&WebhookArgs::default(), "ops").is_empty());
}
