//! A month's invoices: drafts computed now (with the adjustments of a
//! closed month before), or a closing's final invoices as stored.

use std::collections::BTreeMap;

use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::layout::LakeLocation;
use bigdecimal::{BigDecimal, Zero};

use super::store::{PreviousClose, closings, find_closing, stored_invoices};
use crate::billed::{BilledInvoice, InvoiceStatus, adjustment_rows, empty_invoice};
use crate::credits::ledger::{TenantDrawn, drawn_before};
use crate::credits::{self, Drawn};
use crate::error::QueryError;
use crate::period::Period;
use crate::reports::{self, ReportSettings};
use crate::rounding::{MONEY_SCALE, format_fixed};

/// The invoices of `period` as billed now (drafts): its usage with `settings`,
/// plus, when the month before is closed (`previous`), the adjustment lines of
/// its late events, for every tenant with usage or adjustments (or `tenant`).
/// `drawn` is the credit each tenant's invoices of earlier months drew
/// ([`crate::credits::ledger::drawn_before`]): the month before is redrawn
/// against its balances less its own frozen draws, then the month's own total
/// draws from what is left.
pub async fn billed_invoices(
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: Option<&str>,
    previous: Option<&PreviousClose>,
    drawn: &TenantDrawn,
) -> Result<Vec<BilledInvoice>, QueryError> {
    let own = reports::invoices(snapshot, settings, period, tenant).await?;
    let mut own: BTreeMap<String, _> = own.into_iter().map(|i| (i.tenant_id.clone(), i)).collect();
    let mut adjustments: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let mut drawn_now: TenantDrawn = drawn.clone();
    if let Some(previous) = previous {
        let adjusted = previous.closing.month;
        let recomputed = reports::invoices(snapshot, &previous.settings, adjusted, tenant).await?;
        let recomputed: BTreeMap<&str, _> = recomputed
            .iter()
            .map(|i| (i.tenant_id.as_str(), i))
            .collect();
        let finals: BTreeMap<&str, &BilledInvoice> = previous
            .invoices
            .iter()
            .filter(|i| tenant.is_none_or(|t| t == i.tenant_id))
            .map(|i| (i.tenant_id.as_str(), i))
            .collect();
        let tenants: std::collections::BTreeSet<&str> =
            recomputed.keys().chain(finals.keys()).copied().collect();
        for t in tenants {
            let mut rows = adjustment_rows(
                t,
                period,
                adjusted,
                recomputed.get(t).copied(),
                finals.get(t).copied(),
            )?;
            let grants = previous.settings.book.credit_grants(t);
            let frozen = match finals.get(t) {
                Some(final_invoice) => credits::own_draws(&final_invoice.rows)?,
                None => Drawn::new(),
            };
            if !grants.is_empty() || !frozen.is_empty() {
                // The month before, redrawn against its own balances.
                let before =
                    credits::less_drawn(&drawn.get(t).cloned().unwrap_or_default(), &frozen);
                let total = recomputed
                    .get(t)
                    .map_or_else(BigDecimal::zero, |i| i.total.clone());
                let redrawn: Drawn = credits::draw(grants, adjusted, &before, &total)
                    .into_iter()
                    .collect();
                rows.extend(credits::redraw_rows(t, period, adjusted, &frozen, &redrawn));
                let mut after = before;
                credits::add_drawn(&mut after, &redrawn);
                drawn_now.insert(t.to_string(), after);
            }
            if !rows.is_empty() {
                adjustments.insert(t.to_string(), rows);
            }
        }
    }
    for t in adjustments.keys() {
        own.entry(t.clone()).or_insert_with(|| {
            empty_invoice(
                t,
                period,
                settings.book.currency(),
                settings.book.discount_percent(t),
            )
        });
    }
    Ok(own
        .into_values()
        .map(|invoice| {
            let t = invoice.tenant_id.as_str();
            let draws = credits::draw(
                settings.book.credit_grants(t),
                period,
                drawn_now.get(t).unwrap_or(&Drawn::new()),
                &invoice.total,
            );
            let credit_rows = credits::credit_rows(t, period, &draws);
            let rows = adjustments.remove(t).unwrap_or_default();
            BilledInvoice::draft_with_credits(&invoice, credit_rows, rows)
        })
        .collect())
}

/// One tenant's invoice of `period` as `view` shows it. A tenant without usage or
/// adjustments in the month owes nothing: it gets an empty invoice (no lines, total
/// `0.00`) with the month's status, final when a closing covers it.
pub async fn tenant_invoice(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: &str,
    view: InvoiceView,
) -> Result<BilledInvoice, QueryError> {
    let invoices = month_invoices(location, snapshot, settings, period, Some(tenant), view);
    if let Some(invoice) = invoices.await?.pop() {
        return Ok(invoice);
    }
    let all = closings(location).await?;
    let revision = match view {
        InvoiceView::Revision(r) => Some(r),
        _ => None,
    };
    let closed = find_closing(&all, period, revision).filter(|_| view != InvoiceView::Live);
    let (recorded, status) = match closed {
        Some(closing) => (Some(closing.settings()?), closing.status()),
        None => (None, InvoiceStatus::Draft),
    };
    let book = &recorded.as_ref().unwrap_or(settings).book;
    let empty = empty_invoice(
        tenant,
        period,
        book.currency(),
        book.discount_percent(tenant),
    );
    let mut invoice = BilledInvoice::draft(&empty, Vec::new());
    invoice.status = status;
    Ok(invoice)
}

/// Σ invoice totals, as money text.
pub fn sum_of_totals(invoices: &[BilledInvoice]) -> Result<String, QueryError> {
    let mut total = BigDecimal::zero();
    for invoice in invoices {
        total += invoice.total()?;
    }
    Ok(format_fixed(&total, MONEY_SCALE))
}

/// Which invoices of a month to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceView {
    /// The newest final revision when the month is closed, else a draft.
    Current,
    /// The final invoices of one revision.
    Revision(i32),
    /// Recomputed now (a draft), closed or not.
    Live,
}

/// The invoices of `period` (of `tenant` only, when given) as `view` asks: the
/// one function the CLI and the API read invoices through.
pub async fn month_invoices(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: Option<&str>,
    view: InvoiceView,
) -> Result<Vec<BilledInvoice>, QueryError> {
    let all = closings(location).await?;
    let revision = match view {
        InvoiceView::Revision(r) => Some(r),
        _ => None,
    };
    let found = find_closing(&all, period, revision);
    if let (Some(r), None) = (revision, found) {
        return Err(QueryError::InvalidInput(format!(
            "{period} has no closing of revision {r}"
        )));
    }
    match found {
        Some(closed) if view != InvoiceView::Live => {
            stored_invoices(location, closed, tenant).await
        }
        _ => {
            let previous = match find_closing(&all, period.prev(), None) {
                Some(closed) => Some(PreviousClose::load(location, closed).await?),
                None => None,
            };
            let drawn = drawn_before(location, snapshot, settings, period, tenant).await?;
            billed_invoices(
                snapshot,
                settings,
                period,
                tenant,
                previous.as_ref(),
                &drawn,
            )
            .await
        }
    }
}
