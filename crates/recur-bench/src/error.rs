//! The benchmark's one error type: every failure ends the run with a message.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Msg(String),
}

pub type Res<T> = Result<T, BenchError>;

pub fn msg(s: impl Into<String>) -> BenchError {
    BenchError::Msg(s.into())
}
