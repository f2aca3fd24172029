//! `POST /v1/preview`: what-if pricing (docs/reference.md#what-if-pricing) for
//! finance and admin. The body is the proposed price book as TOML (the
//! `[[rates]]` and `[tenants.*]` of an allot.toml, at most
//! [`MAX_PRICE_BOOK_BYTES`]), checked like the file `allot preview` reads; the
//! months, the tenant and `lines` come in the query. Nothing is written.

use allot_query::preview::{MAX_PRICE_BOOK_BYTES, preview, preview_months};
use allot_query::render::preview_table;
use allot_query::reports::ReportSettings;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::Routes;
use crate::error::ApiError;
use crate::extract::{ApiQuery, FinanceCaller};
use crate::respond::{Format, report};
use crate::state::AppState;

/// `POST /v1/preview`.
pub fn routes() -> Routes {
    Routes::new().post("/v1/preview", preview_handler)
}

/// `?month=YYYY-MM` or `?months=A..B`, optionally `tenant` and `lines=true`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewQuery {
    #[serde(default)]
    month: Option<String>,
    #[serde(default)]
    months: Option<String>,
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    lines: bool,
}

async fn preview_handler(
    State(state): State<AppState>,
    _: FinanceCaller,
    format: Format,
    ApiQuery(query): ApiQuery<PreviewQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let months = preview_months(query.month.as_deref(), query.months.as_deref())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if body.len() > MAX_PRICE_BOOK_BYTES {
        return Err(ApiError::BadRequest(format!(
            "the price book is larger than {MAX_PRICE_BOOK_BYTES} bytes"
        )));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::BadRequest("the price book is not UTF-8 text".to_string()))?;
    let proposed = state
        .settings
        .config
        .with_price_book(text, "the request body")
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut proposed = ReportSettings::new(proposed);
    proposed.use_rollups = state.settings.use_rollups;
    let served = state.served().await?;
    let previews = preview(
        &state.lake,
        &served.snapshot,
        &state.settings,
        &proposed,
        &months,
        query.tenant.as_deref(),
    )
    .await?;
    let table = preview_table(&previews, query.lines);
    Ok(report(
        format,
        || {
            json!({
                "currency": state.settings.config.currency,
                "rows": table.to_json(),
            })
        },
        || table.clone(),
    ))
}
