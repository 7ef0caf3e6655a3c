//! Clock trust: the schedule decisions (`catchUp: Skip`, `Latest`, the first-sight lookback) use
//! this replica's wall clock, so a replica whose clock is far from the API server's must not lead.
//! The skew is measured against the `Date` header of the API server's answers (one-second
//! resolution, so the bound is in seconds) and published as a metric; beyond the bound the
//! replica reports not ready, stops acting and hands the lease over.
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use http::header::DATE;
use kube::Client;
use kube::client::Body;
use tracing::{info, warn};

use crate::lease::shards::Leaderships;
use crate::metrics::Metrics;
use crate::server::Health;

/// How often the skew is measured.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Why a measurement failed.
#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error("asking the API server for its time: {0}")]
    Request(String),
    #[error("the API server's answer has no usable Date header")]
    NoDate,
}

/// Local clock minus the API server's, in seconds, from one answer's `Date` header received
/// between `sent` and `received`. `Date` is truncated to the second, so the server's instant is
/// taken half a second after it, and ours half-way through the request.
pub fn skew_seconds(date: &str, sent: SystemTime, received: SystemTime) -> Option<f64> {
    let server = DateTime::parse_from_rfc2822(date).ok()?.with_timezone(&Utc);
    let server = server + chrono::Duration::milliseconds(500);
    let rtt = received.duration_since(sent).unwrap_or_default();
    let local: DateTime<Utc> = (sent + rtt / 2).into();
    Some((local - server).num_milliseconds() as f64 / 1000.0)
}

/// One measurement: `GET /version` and its `Date` header.
pub async fn measure(client: &Client) -> Result<f64, ClockError> {
    let request = http::Request::get("/version")
        .body(Body::empty())
        .map_err(|e| ClockError::Request(e.to_string()))?;
    let sent = SystemTime::now();
    let response = tokio::time::timeout(Duration::from_secs(10), client.send(request))
        .await
        .map_err(|_| ClockError::Request("no answer within 10s".into()))?
        .map_err(|e| ClockError::Request(e.to_string()))?;
    let received = SystemTime::now();
    let date = response
        .headers()
        .get(DATE)
        .and_then(|d| d.to_str().ok())
        .ok_or(ClockError::NoDate)?;
    skew_seconds(date, sent, received).ok_or(ClockError::NoDate)
}

/// Measures every [`CHECK_EVERY`] until `shutdown`, publishing the skew and whether it is within
/// `max`. A failed measurement changes nothing (the API server may just be restarting).
pub async fn watch(
    client: Client,
    max: Duration,
    leadership: Leaderships,
    metrics: std::sync::Arc<Metrics>,
    health: Health,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        match measure(&client).await {
            Ok(skew) => {
                metrics.set_clock_skew(skew);
                let trusted = within(skew, max);
                if trusted != leadership.clock_trusted() {
                    if trusted {
                        info!(skew_s = skew, "the clock agrees with the API server again");
                    } else {
                        warn!(
                            skew_s = skew,
                            max_s = max.as_secs_f64(),
                            "this replica's clock differs from the API server's beyond --max-clock-skew: not leading"
                        );
                    }
                }
                health.set_clock_problem((!trusted).then(|| {
                    format!(
                        "clock skew {skew:.1}s against the API server exceeds --max-clock-skew {}s",
                        max.as_secs_f64()
                    )
                }));
                leadership.set_clock_trusted(trusted);
            }
            Err(err) => warn!(%err, "could not measure clock skew"),
        }
    }
}

/// True when a skew of `skew` seconds is within `max`.
pub fn within(skew: f64, max: Duration) -> bool {
    skew.abs() <= max.as_secs_f64()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use std::time::UNIX_EPOCH;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn skew_is_local_midpoint_minus_server_date_centred() {
        // 2026-12-01T05:00:00Z is 1796101200.
        let date = "Tue, 01 Dec 2026 05:00:00 GMT";
        let fast = skew_seconds(date, at(1_796_101_320, 400), at(1_796_101_320, 600)).unwrap();
        assert!((fast - 120.0).abs() < 0.01, "{fast}");
        let same = skew_seconds(date, at(1_796_101_200, 400), at(1_796_101_200, 600)).unwrap();
        assert!(same.abs() < 0.01, "{same}");
        let slow = skew_seconds(date, at(1_796_101_170, 0), at(1_796_101_171, 0)).unwrap();
        assert!((slow + 30.0).abs() < 0.01, "{slow}");
        assert!(skew_seconds("yesterday", at(0, 0), at(0, 1)).is_none());
    }

    #[test]
    fn the_bound_is_inclusive_and_symmetric() {
        let max = Duration::from_secs(10);
        assert!(within(10.0, max) && within(-10.0, max) && within(0.4, max));
        assert!(!within(10.5, max) && !within(-61.0, max));
    }

    /// Issue 11 (9): an API server whose Date is two minutes behind ours makes this replica
    /// refuse to lead, with the skew in the metric and the reason in readiness.
    #[tokio::test]
    async fn a_replica_two_minutes_fast_stops_leading() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                assert_eq!(req.uri().path(), "/version");
                let behind: DateTime<Utc> = Utc::now() - chrono::Duration::seconds(120);
                let date = behind.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
                send.send_response(
                    Response::builder()
                        .header(DATE, date)
                        .body(Body::from(b"{}".to_vec()))
                        .unwrap(),
                );
            }
        });
        let leadership = crate::lease::Leadership::always();
        let metrics = std::sync::Arc::new(Metrics::new());
        let health = Health::new();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(watch(
            client,
            Duration::from_secs(10),
            Leaderships::single(leadership.clone()),
            metrics.clone(),
            health.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        let mut changes = leadership.changes();
        tokio::time::timeout(Duration::from_secs(10), changes.wait_for(|l| !*l))
            .await
            .expect("leadership given up in time")
            .unwrap();
        assert!(!leadership.is_leader());
        let text = metrics.encode();
        let skew: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("recur_clock_skew_seconds "))
            .expect("the skew gauge")
            .parse()
            .unwrap();
        assert!((119.0..=121.0).contains(&skew), "{skew}");
        assert!(
            health
                .clock_problem()
                .is_some_and(|p| p.contains("clock skew"))
        );
        let _ = stop.send(());
        task.await.unwrap();
    }
}
