//! The Prometheus registry of the process and the `/metrics` endpoint.
//!
//! [`install_recorder`] installs the one recorder for the `metrics` facade, which
//! the crates record through (the names live in `allot_ingest::telemetry` and
//! `allot_api::metrics`); its [`PrometheusHandle`] renders the text format. A collector serves it on
//! `--metrics-listen` with [`serve`]; the server can mount the same handle at its
//! own `/metrics`.

use std::net::SocketAddr;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

/// Installs the process's one recorder (`allot_api::metrics::install_recorder`)
/// with the collector's flush-duration buckets beside the server's, describes the
/// collector's metrics, and returns its handle. Must run inside a Tokio runtime.
pub fn install_recorder() -> Result<PrometheusHandle, String> {
    let handle = allot_api::metrics::install_recorder(&[(
        allot_ingest::telemetry::FLUSH_DURATION,
        allot_ingest::telemetry::FLUSH_DURATION_BUCKETS,
    )])?;
    allot_ingest::telemetry::describe();
    Ok(handle)
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
