//! Period close (docs/reference.md#period-close): the closings, a tenant's completeness certificate
//! and the margin report. Closings and margin are for finance and admin; a
//! tenant token sees its own certificate only. An open month's certificate is
//! empty (`"status": "open"`).

use std::sync::Arc;

use allot_query::closing::{self, CERTIFICATE_COLUMNS, MARGIN_COLUMNS, find_closing};
use allot_query::render::ReportTable;
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;

use super::Routes;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{FinanceCaller, Month};
use crate::respond::{Format, report};
use crate::state::AppState;

/// `GET /v1/closings`, `/v1/tenants/{id}/invoices/{month}/certificate`,
/// `/v1/margin/{month}`.
pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/closings", closings)
        .get("/v1/tenants/{id}/invoices/{month}/certificate", certificate)
        .get("/v1/margin/{month}", margin)
}

/// The columns of the closings list.
const CLOSINGS_COLUMNS: [&str; 8] = [
    "month",
    "revision",
    "closed_at",
    "who",
    "reason",
    "usage_version",
    "config_sha256",
    "tenant_days",
];

async fn closings(
    State(state): State<AppState>,
    _: FinanceCaller,
    format: Format,
) -> Result<Response, ApiError> {
    let found = closing::closings(&state.lake).await?;
    let mut table = ReportTable::new(&CLOSINGS_COLUMNS);
    table.rows = found
        .iter()
        .map(|c| {
            vec![
                c.month.to_string(),
                c.revision.to_string(),
                c.closed_at.clone(),
                c.who.clone(),
                c.reason.clone().unwrap_or_default(),
                c.usage_version.to_string(),
                c.config_sha256.clone(),
                c.certificate.len().to_string(),
            ]
        })
        .collect();
    Ok(report(
        format,
        || json!({"closings": table.to_json()}),
        || table.clone(),
    ))
}

async fn certificate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, _)): Path<(String, String)>,
    month: Result<Month, ApiError>,
    format: Format,
) -> Result<Response, ApiError> {
    let snapshot = Arc::clone(&state.served().await?.snapshot);
    state.authorize_tenant(&principal, &id, &snapshot)?;
    let Month(period) = month?;
    let found = closing::closings(&state.lake).await?;
    let closed = find_closing(&found, period, None);
    let days: Vec<_> = closed
        .map(|c| {
            c.certificate
                .iter()
                .filter(|day| day.tenant_id == id)
                .collect()
        })
        .unwrap_or_default();
    let mut table = ReportTable::new(&CERTIFICATE_COLUMNS);
    table.rows = days.iter().map(|day| day.csv_record()).collect();
    Ok(report(
        format,
        || match closed {
            Some(closed) => json!({
                "tenant_id": id,
                "period": period.to_string(),
                "status": "closed",
                "revision": closed.revision,
                "closed_at": closed.closed_at,
                "version": closed.usage_version,
                "days": days,
            }),
            // An open month has no certificate yet.
            None => json!({
                "tenant_id": id,
                "period": period.to_string(),
                "status": "open",
                "days": [],
            }),
        },
        || table.clone(),
    ))
}

async fn margin(
    State(state): State<AppState>,
    _: FinanceCaller,
    Month(period): Month,
    format: Format,
) -> Result<Response, ApiError> {
    let snapshot = Arc::clone(&state.served().await?.snapshot);
    let margin = closing::month_margin(&state.lake, &snapshot, &state.settings, period, || {
        state.cost_pools()
    })
    .await?;
    let mut table = ReportTable::new(&MARGIN_COLUMNS);
    table.rows = margin.rows;
    let status = if margin.closed { "final" } else { "draft" };
    Ok(report(
        format,
        || {
            json!({
                "period": period.to_string(),
                "status": status,
                "currency": state.settings.config.currency,
                "rows": table.to_json(),
            })
        },
        || table.clone(),
    ))
}
