//! Serving axum on loopback with connections a handler can reset (RST), and a bounded graceful
//! shutdown.
//!
//! `axum::serve` hides the socket from handlers, so the listener wraps each accepted stream in
//! [`ResettableIo`] and hands handlers a [`Conn`] (as `ConnectInfo`) that shares a reset flag with
//! it. Once the flag is set, the next read or write sets `SO_LINGER` to zero and fails; hyper then
//! drops the connection and the kernel sends RST instead of FIN (and no answer is written).
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a shutdown waits for open requests before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Refuses anything but a loopback address: these dev servers have no authentication.
pub fn loopback(addr: SocketAddr) -> Result<SocketAddr, String> {
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err(format!(
            "--listen {addr}: only loopback addresses (127.0.0.1, ::1) are allowed"
        ))
    }
}

/// True for `127.x.x.x`, `::1` and `localhost` (URL host forms).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A handler's handle on its connection.
#[derive(Clone, Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    reset: Arc<AtomicBool>,
}

impl Conn {
    /// Resets the connection (RST) instead of answering: whatever response the handler returns
    /// is not sent.
    pub fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
    }
}

impl Connected<IncomingStream<'_, DevListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, DevListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream whose connection can be reset by a handler.
pub struct ResettableIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl ResettableIo {
    /// When the handler asked for a reset: arm RST-on-close and fail the I/O.
    fn check(&self) -> io::Result<()> {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by the dev server",
            ));
        }
        Ok(())
    }
}

impl Drop for ResettableIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A loopback TCP listener yielding [`ResettableIo`] streams.
pub struct DevListener(TcpListener);

impl Listener for DevListener {
    type Io = ResettableIo;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, peer)) => {
                    let reset = Arc::new(AtomicBool::new(false));
                    return (
                        ResettableIo {
                            stream,
                            reset: reset.clone(),
                        },
                        Conn { peer, reset },
                    );
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Conn {
            peer: self.0.local_addr()?,
            reset: Arc::new(AtomicBool::new(false)),
        })
    }
}

/// Serves `router` on `listener` until `shutdown` turns true, then stops accepting and gives open
/// requests [`SHUTDOWN_GRACE`] to finish (handlers that wait should watch `shutdown` too).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let mut stop = shutdown.clone();
    let server = axum::serve(
        DevListener(listener),
        router.into_make_service_with_connect_info::<Conn>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = shutdown.wait_for(|s| *s) => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                "open requests did not finish within {SHUTDOWN_GRACE:?}; exiting anyway"
            );
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Running a router in-process for tests.
#[cfg(test)]
pub mod testing {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    /// A server on 127.0.0.1:0; dropping it shuts it down.
    pub struct Running {
        pub addr: SocketAddr,
        pub shutdown: watch::Sender<bool>,
        pub task: Option<tokio::task::JoinHandle<io::Result<()>>>,
    }

    impl Running {
        pub fn url(&self, path: &str) -> String {
            format!("http://{}{path}", self.addr)
        }

        /// Shuts down and waits for `serve` to return.
        pub async fn stop(mut self) -> io::Result<()> {
            let _ = self.shutdown.send(true);
            match self.task.take() {
                Some(task) => task.await.map_err(io::Error::other)?,
                None => Ok(()),
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.shutdown.send(true);
        }
    }

    /// Starts `make(shutdown)`'s router.
    pub async fn start(make: impl FnOnce(watch::Receiver<bool>) -> Router) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        let (shutdown, rx) = watch::channel(false);
        let router = make(rx.clone());
        let task = tokio::spawn(serve(listener, router, rx));
        Running {
            addr,
            shutdown,
            task: Some(task),
        }
    }

    /// An HTTP client that ignores proxies.
    pub fn http(timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn only_loopback_is_allowed() {
        for ok in ["127.0.0.1:8080", "127.0.0.2:1", "[::1]:3500"] {
            assert!(loopback(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:8080", "10.0.0.1:80", "[::]:80", "192.168.1.1:3500"] {
            let err = loopback(bad.parse().unwrap()).unwrap_err();
            assert!(err.contains("only loopback"), "{err}");
        }
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("[::1]"));
        assert!(!is_loopback_host("example.com"));
        assert!(!is_loopback_host("10.1.2.3"));
        assert!(!is_loopback_host("localhost.evil.com"));
    }
}
