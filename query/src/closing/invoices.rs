//! A month's invoices as a view asks for them: drafts computed now
//! ([`super::drafts`]), or a closing's final invoices as stored.

use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::layout::LakeLocation;
use bigdecimal::{BigDecimal, Zero};

use super::drafts::billed_invoices;
use super::ledger::drawn_before;
use super::store::{PreviousClose, closings, find_closing, stored_invoices};
use crate::billed::{BilledInvoice, InvoiceStatus, empty_invoice};
use crate::error::QueryError;
use crate::period::Period;
use crate::reports::ReportSettings;
use crate::rounding::{MONEY_SCALE, format_fixed};

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
