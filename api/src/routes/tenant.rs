//! One tenant's views: health, usage series and invoices. A tenant token reaches
//! only its own tenant; finance and admin reach every tenant.

use allot_query::closing::{self, InvoiceView};
use allot_query::period::format_micros;
use allot_query::render::{health_json, health_table, invoice_json, invoices_table, usage_table};
use allot_query::reports;
use allot_query::request::{RawUsageRequest, UsageRequest};
use axum::Extension;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::Routes;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Month};
use crate::lake_view::{Depends, ServedLake};
use crate::params;
use crate::respond::{Format, report};
use crate::state::AppState;

/// `GET /v1/tenants/{id}/…`.
pub fn routes() -> Routes {
    Routes::new()
        .get("/v1/tenants/{id}/health", health)
        .get("/v1/tenants/{id}/usage", usage)
        .get("/v1/tenants/{id}/invoices/{month}", tenant_invoice)
}

/// `?as_of=` of the health routes (default: now).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsOfQuery {
    as_of: Option<String>,
}

impl AsOfQuery {
    /// The instant asked for, or the instant the served lake was read at.
    pub fn instant(&self, served: &ServedLake) -> Result<i64, ApiError> {
        Ok(params::optional_instant("as_of", self.as_of.as_deref())?.unwrap_or(served.as_of))
    }
}

async fn health(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    format: Format,
    query: Result<ApiQuery<AsOfQuery>, ApiError>,
) -> Result<Response, ApiError> {
    let served = state.served().await?;
    state.authorize_tenant(&principal, &id, &served.snapshot)?;
    let now = query?.0.instant(&served)?;
    let key = format!(
        "{id} {now} {format:?} {}",
        served.stamp(Depends::AllTenants)
    );
    let alone = principal.confined_to().is_some() && now != served.as_of;
    state
        .cache
        .answer("tenant_health", key, async {
            let health = state.tenant_health(&served, &id, now, alone).await?;
            let currency = &state.settings.config.currency;
            Ok(report(
                format,
                || health_json(&health, currency),
                || health_table(std::slice::from_ref(&health)),
            ))
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    metric: Option<String>,
}

async fn usage(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    format: Format,
    query: Result<ApiQuery<UsageQuery>, ApiError>,
) -> Result<Response, ApiError> {
    let served = state.served().await?;
    let tenant = state.authorize_tenant(&principal, &id, &served.snapshot)?;
    let ApiQuery(query) = query?;
    let request = UsageRequest::try_from(RawUsageRequest {
        tenant,
        from: query.from,
        to: query.to,
        bucket: query.bucket,
        metric: query.metric,
        now: served.as_of,
    })?;
    let key = format!(
        "{id} {} {} {} {:?} {format:?} {}",
        request.from(),
        request.to(),
        request.bucket(),
        request.metric(),
        served.stamp(Depends::TenantUsage(&id))
    );
    state
        .cache
        .answer("usage", key, async {
            let points = reports::usage_series(&served.snapshot, &state.settings, &request).await?;
            Ok(report(
                format,
                || {
                    json!({
                        "tenant_id": id,
                        "from": format_micros(request.from()),
                        "to": format_micros(request.to()),
                        "bucket": request.bucket(),
                        "points": usage_table(&points).to_json(),
                    })
                },
                || usage_table(&points),
            ))
        })
        .await
}

/// `?live=true` of the invoice routes: recompute a closed month.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InvoiceQuery {
    #[serde(default)]
    live: bool,
}

impl InvoiceQuery {
    /// The view of the month's invoices asked for.
    pub fn view(&self) -> InvoiceView {
        if self.live {
            InvoiceView::Live
        } else {
            InvoiceView::Current
        }
    }
}

async fn tenant_invoice(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((id, _)): Path<(String, String)>,
    month: Result<Month, ApiError>,
    format: Format,
    ApiQuery(query): ApiQuery<InvoiceQuery>,
) -> Result<Response, ApiError> {
    let served = state.served().await?;
    state.authorize_tenant(&principal, &id, &served.snapshot)?;
    let Month(period) = month?;
    let view = query.view();
    let key = format!(
        "{id} {period} {view:?} {format:?} {}",
        served.stamp(Depends::TenantInvoices(&id))
    );
    state
        .cache
        .answer("tenant_invoice", key, async {
            let invoice = closing::tenant_invoice(
                &state.lake,
                &served.snapshot,
                &state.settings,
                period,
                &id,
                view,
            )
            .await?;
            Ok(report(
                format,
                || invoice_json(&invoice),
                || invoices_table(std::slice::from_ref(&invoice)),
            ))
        })
        .await
}
