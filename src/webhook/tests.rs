//! The HTTPS server in process: a real TLS client that trusts only the webhook's CA, raw
//! HTTP/1.1 over it, certificate replacement while serving, and a drained shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
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

fn client(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// POSTs `body` to `/validate` over TLS; `Err` when the handshake fails.
async fn post(port: u16, ca_pem: &str, body: &str) -> Result<String, std::io::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = client(ca_pem).connect(name, tcp).await?;
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer).await?;
    Ok(answer)
}

#[tokio::test]
async fn serves_reviews_over_tls_and_switches_certificates_without_a_restart() {
    let now = chrono::Utc::now();
    let names = vec!["127.0.0.1".to_string()];
    let ca1 = certs::new_ca(now).unwrap();
    let cert1 = certs::new_serving(&ca1.key_pem, &names, now).unwrap();
    let store = Arc::new(tls::Certificates::default());
    let config = tls::server_config(store.clone()).unwrap();
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
