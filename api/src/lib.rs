//! allot-api: the HTTP server over the query engine (docs/reference.md#http-api,
//! docs/reference.md#security-model).
//!
//! Tenant-scoped JSON and CSV views, sandboxed SQL, Prometheus metrics, the
//! OpenAPI document and the web dashboards, served with axum. It depends on
//! `allot-query` for every figure, never on the collectors.
//!
//! - [`router`] builds the whole application from the route groups of
//!   [`routes`] with its state set once; [`serve`] runs it until a shutdown
//!   signal, finishing the requests in flight, over the connection loop of
//!   [`server`] (header-read, idle and shutdown timeouts).
//! - [`auth`] verifies bearer tokens (and mints them for `allot token`);
//!   [`state::AppState::authorize_tenant`] is the one tenant check.
//! - [`error`] classifies every error into a status and one JSON body;
//!   [`extract`] holds the handlers' extractors (caller, month, query
//!   string), which refuse with it.
//! - [`limits`] holds the per-tenant rate limits and SQL slots, [`audit`] the
//!   log of denied attempts, [`metrics`] the Prometheus recorder.
//! - [`listeners`] tracks the listeners besides HTTP for `/readyz`.
//! - [`tls`] loads `api.tls_cert` / `api.tls_key` for every listener.
//! - [`lake_view`] keeps the lake in memory and follows its commits;
//!   [`cache`] keeps computed reports keyed by what they were computed from.
//! - [`alerts`] evaluates alert rules after each refresh and delivers them.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod cache;
pub mod error;
pub mod extract;
pub mod flight_sql;
pub mod lake_view;
pub mod limits;
pub mod listeners;
pub mod metrics;
pub mod middleware;
pub mod params;
pub mod pg;
pub mod respond;
pub mod routes;
pub mod server;
pub mod state;
pub mod tls;
pub mod wire;

use std::future::Future;

use axum::Router;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

pub use allot_query::LakeLocation;
pub use error::ApiError;
pub use routes::RouteSpec;
pub use state::{ApiOptions, AppState};

/// The application: every route of docs/reference.md#http-api behind the request timeout, the
/// body limit, the JSON error shape and the request observer; `/v1` routes
/// behind token authentication.
pub fn router(state: AppState) -> Router {
    let authenticated = routes::authenticated()
        .router
        .route_layer(from_fn_with_state(state.clone(), middleware::authenticate));
    Router::new()
        .merge(authenticated)
        .merge(routes::public().router)
        .merge(routes::web::routes())
        .fallback(routes::web::fallback)
        .layer(RequestBodyLimitLayer::new(state.max_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            state.request_timeout,
        ))
        .layer(from_fn(middleware::json_errors))
        .layer(from_fn_with_state(state.clone(), middleware::observe))
        .with_state(state)
}

/// Every documented route of [`router`] (all but the dashboard files).
pub fn route_table() -> Vec<RouteSpec> {
    let mut specs = routes::authenticated().specs;
    specs.extend(routes::public().specs);
    specs.sort();
    specs
}

/// How long a stopping server waits for the first load of the lake to end.
const LOAD_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves [`router`] on `listener` until `shutdown` resolves, then stops
/// accepting connections and finishes the requests in flight within
/// `api.shutdown_timeout` ([`server`]). The lake is loaded at once in the
/// background (`/readyz` says when it is done).
///
/// A load still running at the stop gets up to `LOAD_GRACE` to end: the
/// Delta kernel reads the log on blocking threads that wait for tasks of this
/// runtime, so stopping the runtime under them would break the read midway.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let loading = state.clone();
    let first_load = tokio::spawn(async move {
        if let Err(error) = loading.served().await {
            tracing::warn!(%error, "the lake cannot be read yet; the first request tries again");
        }
    });
    let limits = state.connection_limits;
    let tls = state
        .tls
        .as_ref()
        .map(|tls| tls.acceptor(&[tls::ALPN_HTTP1]));
    server::serve_connections(listener, router(state), limits, tls, shutdown).await?;
    if tokio::time::timeout(LOAD_GRACE, first_load).await.is_err() {
        tracing::warn!("stopping while the lake is still loading");
    }
    Ok(())
}
