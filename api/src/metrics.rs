//! Prometheus metrics of the server, rendered at `GET /metrics`.
//!
//! The `allot` binary installs the process-wide `metrics` recorder once (with
//! these buckets and the collector's) and hands its handle to the server through
//! `ApiOptions::metrics`; [`install_recorder`] is the fallback for embedding the
//! router without it (tests). Every crate records through the `metrics` facade.
//!
//! - `allot_http_requests_total{route,method,status}`: requests answered;
//! - `allot_http_request_duration_seconds{route}`: a histogram of latency.
//!
//! `route` is the matched route template (`/v1/tenants/{id}/health`), never the
//! raw path, so tenant ids do not multiply the series; requests that match no
//! route are `unmatched`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by route template, method and status.
pub const HTTP_REQUESTS: &str = "allot_http_requests_total";
/// Request latency in seconds, by route template.
pub const HTTP_DURATION: &str = "allot_http_request_duration_seconds";

/// Latency buckets of [`HTTP_DURATION`], in seconds.
pub const HTTP_DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

fn builder() -> PrometheusBuilder {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(HTTP_DURATION.to_string()),
            &HTTP_DURATION_BUCKETS,
        )
        .expect("the buckets are not empty")
}

/// Installs the process-wide recorder once and returns its handle (the same
/// handle on every call). When another recorder was installed first, the
/// returned handle renders an empty recorder and a warning is logged.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = builder().install_recorder().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics will be empty");
                builder().build_recorder().handle()
            });
            metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by route template, method and status");
            metrics::describe_histogram!(
                HTTP_DURATION,
                metrics::Unit::Seconds,
                "HTTP request latency by route template"
            );
            handle
        })
        .clone()
}

/// Records one answered request.
pub fn record_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    metrics::counter!(
        HTTP_REQUESTS,
        "route" => route.to_string(),
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(HTTP_DURATION, "route" => route.to_string()).record(elapsed.as_secs_f64());
}
