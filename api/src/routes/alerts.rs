//! `GET /v1/alerts` (docs/reference.md#alerts-api): the notices the alert
//! runner last read, newest first, with their deliveries. Finance and admin
//! see every tenant's; a tenant token its own tenant's only.

use allot_query::alerts::{AlertLog, AlertState, Notice};
use allot_query::period::format_micros;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Routes;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::state::AppState;

/// The most notices one answer lists.
const MAX_LIMIT: usize = 1000;
/// Notices listed when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// `GET /v1/alerts`.
pub fn routes() -> Routes {
    Routes::new().get("/v1/alerts", alerts)
}

/// The query string of `GET /v1/alerts`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    tenant: Option<String>,
    state: Option<String>,
    current: Option<bool>,
    limit: Option<usize>,
}

async fn alerts(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    query: Result<ApiQuery<AlertsQuery>, ApiError>,
) -> Result<Response, ApiError> {
    let ApiQuery(query) = query?;
    let tenant = match (principal.confined_to(), query.tenant.as_deref()) {
        (Some(own), Some(asked)) if own != asked => {
            return Err(ApiError::TenantNotFound { other_tenant: true });
        }
        (Some(own), _) => Some(own.to_string()),
        (None, asked) => asked.map(str::to_string),
    };
    let wanted = match query.state.as_deref() {
        None => None,
        Some(text) => Some(AlertState::parse(text).ok_or_else(|| {
            ApiError::BadRequest("state: must be \"firing\" or \"resolved\"".to_string())
        })?),
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::BadRequest(format!(
            "limit: must be between 1 and {MAX_LIMIT}"
        )));
    }
    let log = state.alerts.log();
    let listed: Vec<Value> = log
        .notices
        .iter()
        .rev()
        .filter(|n| tenant.as_deref().is_none_or(|t| t == n.tenant_id))
        .filter(|n| wanted.is_none_or(|s| s == n.state))
        .filter(|n| !query.current.unwrap_or(false) || log.is_current(n))
        .take(limit)
        .map(|n| notice_json(&log, n))
        .collect();
    Ok(Json(json!({ "alerts": listed })).into_response())
}

/// One notice: its body's fields plus when it was recorded, whether it is
/// its (rule, tenant)'s last, and its deliveries.
fn notice_json(log: &AlertLog, notice: &Notice) -> Value {
    let mut entry = match serde_json::from_str::<Value>(&notice.body) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    entry.insert(
        "recorded_at".into(),
        json!(format_micros(notice.recorded_at)),
    );
    entry.insert("current".into(), json!(log.is_current(notice)));
    let deliveries: Vec<Value> = notice
        .channels
        .iter()
        .map(|channel| {
            let delivery = log.deliveries.get(&(notice.key.clone(), channel.clone()));
            json!({
                "channel": channel,
                "outcome": delivery.map_or("pending", |d| d.outcome.as_str()),
                "attempts": delivery.map_or(0, |d| d.attempts),
                "last_error": delivery.and_then(|d| d.last_error.clone()),
                "next_attempt_at": delivery
                    .filter(|d| d.outcome == allot_query::alerts::DeliveryOutcome::Pending)
                    .map(|d| format_micros(d.next_attempt_at)),
            })
        })
        .collect();
    entry.insert("deliveries".into(), Value::Array(deliveries));
    Value::Object(entry)
}
