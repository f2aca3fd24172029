//! The Prometheus registry of the process and the `/metrics` endpoint.
//!
//! [`install_recorder`] installs one recorder for the `metrics` facade, which the
//! crates record through (the names live in `allot_ingest::telemetry`); its
//! [`PrometheusHandle`] renders the text format. A collector serves it on
//! `--metrics-listen` with [`serve`]; the server can mount the same handle at its
//! own `/metrics`.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio_util::sync::CancellationToken;

/// Gauges not updated for this long (a partition this process no longer owns)
/// disappear from the output.
const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often histograms are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder once and returns its handle; later calls
/// return the same handle. Must run inside a Tokio runtime (it spawns the upkeep).
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(allot_ingest::telemetry::FLUSH_DURATION.to_string()),
            allot_ingest::telemetry::FLUSH_DURATION_BUCKETS,
        )
        .map_err(|e| format!("configuring the metrics recorder: {e}"))?
        .set_buckets_for_metric(
            Matcher::Full(allot_api::metrics::HTTP_DURATION.to_string()),
            &allot_api::metrics::HTTP_DURATION_BUCKETS,
        )
        .map_err(|e| format!("configuring the metrics recorder: {e}"))?
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    allot_ingest::telemetry::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP_INTERVAL).await;
            upkeep.run_upkeep();
        }
    });
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The `GET /metrics` route rendering `handle`.
pub fn router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                (
                    [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                    handle.render(),
                )
            }
        }),
    )
}

/// Binds `addr` (so a bad or busy address fails before anything starts) and
/// serves `/metrics` on it until `cancel` fires.
pub async fn serve(
    addr: SocketAddr,
    handle: PrometheusHandle,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router(handle))
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::warn!(%err, "the metrics endpoint stopped");
        }
    });
    Ok(bound)
}
