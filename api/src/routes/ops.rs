//! Operations: liveness, readiness (the lake is readable), Prometheus metrics and
//! the OpenAPI document. None of them needs an allot token or shows tenant
//! data, except `/metrics`: its series are labelled with tenant ids, so it takes
//! the bearer token `api.metrics_token` when one is set (and must not be public
//! without one).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Routes;
use crate::error::{ApiError, AuthFailure};
use crate::listeners::ListenerState;
use crate::middleware::{bearer, refuse_anonymous};
use crate::state::AppState;

/// The OpenAPI 3.1 document of the API, kept by hand beside the routes (a test
/// checks that both list the same routes).
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// `GET /healthz`, `/readyz`, `/metrics`, `/v1/openapi.json`.
pub fn routes() -> Routes {
    Routes::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
        .get("/metrics", metrics)
        .get("/v1/openapi.json", openapi)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when the lake is loaded and no listener has stopped; the answer
/// names each listener's address.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if let Err(e) = state.served().await {
        tracing::warn!(error = %e, "not ready");
        return Err(ApiError::NotReady(
            "the lake cannot be read yet".to_string(),
        ));
    }
    let mut listeners = serde_json::Map::new();
    for (name, listener) in state.listeners.states() {
        match listener {
            ListenerState::Serving(address) => {
                listeners.insert(name.to_string(), json!(address.to_string()));
            }
            ListenerState::Failed(error) => {
                return Err(ApiError::NotReady(format!(
                    "the {name} listener stopped: {error}"
                )));
            }
        }
    }
    Ok(Json(json!({"status": "ready", "listeners": listeners})))
}

async fn metrics(State(state): State<AppState>, request: Request) -> Response {
    if let Some(expected) = &state.metrics_token {
        let presented = bearer(&request).and_then(|token| {
            if same_bytes(token.as_bytes(), expected.expose().as_bytes()) {
                Ok(())
            } else {
                Err(AuthFailure::Signature)
            }
        });
        if let Err(failure) = presented {
            return refuse_anonymous(&state, &request, ApiError::Unauthenticated(failure));
        }
    }
    state.metrics.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// Whether `a` and `b` are equal, in a time that depends on their lengths only.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        OPENAPI,
    )
        .into_response()
}
