//! `POST /v1/sql`: sandboxed SQL. A tenant token queries a table built from its
//! own files only; admin queries every tenant; finance may not run SQL. The
//! query runs on the server's SQL pool, never on the workers serving requests.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;

use super::Routes;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::respond::{Format, csv};
use crate::state::AppState;

/// `POST /v1/sql`.
pub fn routes() -> Routes {
    Routes::new().post("/v1/sql", sql)
}

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlBody {
    sql: String,
}

async fn sql(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    format: Format,
    body: Result<Json<SqlBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let scope = principal.sql_scope().ok_or(ApiError::Forbidden)?;
    let Json(body) = body?;
    let _slot = state
        .sql_slots
        .try_acquire(&principal.limit_key())
        .ok_or(ApiError::SqlBusy)?;
    let snapshot = Arc::clone(&state.served().await?.snapshot);
    let output = state
        .sql_pool
        .run(snapshot, scope, body.sql, state.sql_limits.clone())
        .await?;
    Ok(match format {
        Format::Json => Json(output).into_response(),
        Format::Csv => csv(output.to_csv()),
    })
}
