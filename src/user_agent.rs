//! The User-Agent of recur's Kubernetes clients. kube-rs sends none, so an audit log or a
//! request log on the apiserver could not tell recur's requests from any other client's of
//! the same identity; client-go's programs say who they are, and so does recur.
use http::HeaderValue;
use http::header::USER_AGENT;

/// `<program>/<version> (<os>/<arch>)`: client-go's form, without its commit.
pub fn user_agent(program: &str) -> String {
    format!(
        "{program}/{} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

/// Makes every request of a client built from `config` carry `program`'s [`user_agent`], in
/// place of any User-Agent the config had.
pub fn identify(config: &mut kube::Config, program: &str) {
    // A program name is one of ours, a token: always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&user_agent(program)) {
        config.headers.retain(|(name, _)| name != USER_AGENT);
        config.headers.push((USER_AGENT, value));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The request head a client built with [`identify`] sends, read off a socket.
    #[tokio::test]
    async fn a_client_built_from_an_identified_config_names_recur() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let head = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = sock.read(&mut buf).await.unwrap();
                assert!(n > 0, "the client closed before its request head ended");
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"major":"1","minor":"37","gitVersion":"v1.37.2","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(head).unwrap()
        });
        let mut config = kube::Config::new(url.parse().unwrap());
        identify(&mut config, "kubectl-recur");
        identify(&mut config, "recur");
        let client = kube::Client::try_from(config).unwrap();
        client.apiserver_version().await.unwrap();
        let head = head.await.unwrap();
        // Header names are case-insensitive; the value is compared as sent.
        let agents: Vec<&str> = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
            .map(|(_, value)| value.trim())
            .collect();
        assert_eq!(agents, [user_agent("recur")], "in {head}");
        assert!(user_agent("recur").starts_with(&format!("recur/{} (", env!("CARGO_PKG_VERSION"))));
    }
}
