//! Prometheus metrics of the server, rendered at `GET /metrics`.
//!
//! [`install_recorder`] installs the process's one `metrics` recorder: the `allot`
//! binary calls it with the collector's buckets too and hands its handle to the
//! server through `ApiOptions::metrics`; a router embedded without one (tests)
//! installs it itself. Every crate records through the `metrics` facade.
//!
//! - `allot_http_requests_total{route,method,status}`: requests answered;
//! - `allot_http_request_duration_seconds{route}`: a histogram of latency;
//!
//! beside the report cache's (`crate::cache`), the lake view's
//! (`crate::lake_view`) and Flight SQL's (`crate::flight_sql`), all described
//! here so that every one has its help text.
//!
//! `route` is the matched route template (`/v1/tenants/{id}/health`), never the
//! raw path, so tenant ids do not multiply the series; requests that match no
//! route are `unmatched`.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// Requests answered, by route template, method and status.
pub const HTTP_REQUESTS: &str = "allot_http_requests_total";
/// Request latency in seconds, by route template.
pub const HTTP_DURATION: &str = "allot_http_request_duration_seconds";

/// Latency buckets of [`HTTP_DURATION`], in seconds.
pub const HTTP_DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Gauges not updated for this long (a partition this process no longer owns)
/// disappear from the output.
const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often histograms are folded into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the process's one recorder for the `metrics` facade, with the
/// server's latency buckets plus `extra` (metric, bucket bounds) ones, and returns
/// its handle; later calls return the same handle and ignore their `extra`. The
/// `allot` binary calls it first, with the collector's buckets; gauges idle for a
/// minute disappear, and inside a Tokio runtime the histograms are folded every
/// few seconds. Fails when another recorder was installed first.
pub fn install_recorder(extra: &[(&str, &[f64])]) -> Result<PrometheusHandle, String> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let mut builder = PrometheusBuilder::new();
    for (metric, buckets) in [(HTTP_DURATION, &HTTP_DURATION_BUCKETS[..])]
        .into_iter()
        .chain(extra.iter().copied())
    {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(metric.to_string()), buckets)
            .map_err(|e| format!("configuring the metrics recorder: {e}"))?;
    }
    let handle = builder
        .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
        .install_recorder()
        .map_err(|e| format!("installing the metrics recorder: {e}"))?;
    describe();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        let upkeep = handle.clone();
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(UPKEEP_INTERVAL).await;
                upkeep.run_upkeep();
            }
        });
    }
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Registers the help text and unit of every metric the server records (here, in
/// the report cache, the lake view and Flight SQL) with the installed recorder,
/// so that each has its `# HELP` line from the first scrape.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by route template"
    );
    describe_counter!(
        crate::cache::REPORT_COMPUTATIONS,
        "Reports computed rather than answered from the cache, by report"
    );
    describe_counter!(
        crate::cache::REPORT_CACHE_HITS,
        "Reports answered from the cache, by report"
    );
    describe_gauge!(
        crate::cache::REPORT_CACHE_BYTES,
        Unit::Bytes,
        "Bytes of answers held by the report cache"
    );
    describe_histogram!(
        crate::lake_view::LAKE_REFRESH_SECONDS,
        Unit::Seconds,
        "Time one refresh of the served lake took (reading its new commits)"
    );
    describe_gauge!(
        crate::lake_view::LAKE_VERSION,
        "The usage_events table version the server answers from"
    );
    describe_gauge!(
        crate::lake_view::LAKE_REFRESHED_AT,
        Unit::Seconds,
        "Unix time as of which the server answers: its last read of the lake's new commits"
    );
    describe_counter!(
        crate::flight_sql::FLIGHT_STATEMENTS,
        "Flight SQL statements, by outcome (ok, error, failed)"
    );
    describe_counter!(
        crate::flight_sql::FLIGHT_REFUSED,
        "Flight SQL calls refused before they ran, by the HTTP status of the refusal"
    );
    describe_counter!(
        crate::flight_sql::FLIGHT_BYTES,
        Unit::Bytes,
        "Bytes of Arrow data sent over Flight SQL"
    );
    describe_counter!(
        crate::pg::PG_STATEMENTS,
        "PostgreSQL wire statements, by outcome (ok, error, failed)"
    );
    describe_counter!(
        crate::pg::PG_REFUSED,
        "PostgreSQL wire logins and statements refused before they ran, by the HTTP status of the refusal"
    );
    describe_counter!(
        crate::pg::PG_BYTES,
        Unit::Bytes,
        "Bytes of rows sent over the PostgreSQL wire"
    );
    describe_gauge!(
        crate::pg::PG_CONNECTIONS,
        "PostgreSQL wire connections open"
    );
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
