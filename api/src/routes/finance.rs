//! The all-tenant views: the tenant list with health, billing, shared-cost
//! allocation and noisy neighbours. Finance and admin tokens only; a tenant
//! token gets 403.

use allot_query::closing::month_invoices;
use allot_query::period::format_micros;
use allot_query::render::{
    allocation_table, health_json, health_table, invoice_json, invoices_table, noisy_table,
};
use allot_query::reports;
use allot_query::request::{NoisyRequest, RawNoisyRequest};
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Routes;
use super::tenant::{AsOfQuery, InvoiceQuery};
use crate::error::ApiError;
use crate::extract::{ApiQuery, FinanceCaller, Month};
use crate::lake_view::Depends;
use crate::respond::{Format, report};
use crate::state::AppState;

/// `GET /v1/tenants`, `/v1/billing/{month}`, `/v1/allocation/{month}`,
/// `/v1/noisy-neighbors`.
pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/tenants", tenants)
        .get("/v1/billing/{month}", billing)
        .get("/v1/allocation/{month}", allocation)
        .get("/v1/noisy-neighbors", noisy)
}

async fn tenants(
    State(state): State<AppState>,
    _: FinanceCaller,
    format: Format,
    query: Result<ApiQuery<AsOfQuery>, ApiError>,
) -> Result<Response, ApiError> {
    let served = state.served().await?;
    let now = query?.0.instant(&served)?;
    let key = format!("{now} {format:?} {}", served.stamp(Depends::AllTenants));
    state
        .cache.answer("tenants", key, async {
            let rows = state.health_rows(&served, now).await?;
            let currency = &state.settings.config.currency;
            Ok(report(
                format,
                || {
                    json!({
                        "as_of": format_micros(now),
                        "currency": currency,
                        "tenants": rows.iter().map(|h| health_json(h, currency)).collect::<Vec<_>>(),
                    })
                },
                || health_table(&rows),
            ))
        })
        .await
}

async fn billing(
    State(state): State<AppState>,
    _: FinanceCaller,
    format: Format,
    ApiQuery(query): ApiQuery<InvoiceQuery>,
    Month(period): Month,
) -> Result<Response, ApiError> {
    let view = query.view();
    let served = state.served().await?;
    let key = format!(
        "{period} {view:?} {format:?} {}",
        served.stamp(Depends::AllTenants)
    );
    state
        .cache
        .answer("billing", key, async {
            let invoices = month_invoices(
                &state.lake,
                &served.snapshot,
                &state.settings,
                period,
                None,
                view,
            )
            .await?;
            Ok(report(
                format,
                || {
                    json!({
                        "period": period.to_string(),
                        "currency": state.settings.config.currency,
                        "invoices": invoices.iter().map(invoice_json).collect::<Vec<Value>>(),
                    })
                },
                || invoices_table(&invoices),
            ))
        })
        .await
}

async fn allocation(
    State(state): State<AppState>,
    _: FinanceCaller,
    Month(period): Month,
    format: Format,
) -> Result<Response, ApiError> {
    let pools = state.cost_pools()?;
    let served = state.served().await?;
    // The costs file is read afresh on every request, so its pools are part
    // of the key.
    let key = format!(
        "{period} {pools:?} {format:?} {}",
        served.stamp(Depends::AllTenants)
    );
    state
        .cache
        .answer("allocation", key, async {
            let rows =
                reports::allocation(&served.snapshot, &state.settings, &pools, period).await?;
            let table = allocation_table(&rows);
            Ok(report(
                format,
                || json!({"period": period.to_string(), "rows": table.to_json()}),
                || table.clone(),
            ))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoisyQuery {
    from: Option<String>,
    to: Option<String>,
    metric: Option<String>,
    bucket: Option<String>,
    #[serde(default)]
    all: bool,
}

async fn noisy(
    State(state): State<AppState>,
    _: FinanceCaller,
    format: Format,
    ApiQuery(query): ApiQuery<NoisyQuery>,
) -> Result<Response, ApiError> {
    let served = state.served().await?;
    let all = query.all;
    let request = NoisyRequest::try_from(RawNoisyRequest {
        from: query.from,
        to: query.to,
        metric: query.metric,
        bucket: query.bucket,
        all,
        now: served.as_of,
        config: &state.settings.config,
    })?;
    let key = format!(
        "{} {} {} {:?} {all} {format:?} {}",
        request.from(),
        request.to(),
        request.bucket_micros(),
        request.metric(),
        served.stamp(Depends::AllTenants)
    );
    state
        .cache
        .answer("noisy", key, async {
            let rows = reports::noisy(&served.snapshot, &state.settings, &request).await?;
            let table = noisy_table(&rows, all);
            Ok(report(
                format,
                || json!({"rows": table.to_json()}),
                || table.clone(),
            ))
        })
        .await
}
