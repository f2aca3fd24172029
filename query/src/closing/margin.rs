//! Margin per tenant of a month: revenue (its invoices) against allocated
//! cost, for `allot margin` and `GET /v1/margin/{month}` alike.

use std::collections::BTreeMap;
use std::str::FromStr;

use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::layout::LakeLocation;
use bigdecimal::{BigDecimal, Zero};

use super::invoices::{InvoiceView, month_invoices};
use super::store::{closings, find_closing, stored_allocation};
use crate::allocation::{AllocationRow, CostPool};
use crate::billed::BilledInvoice;
use crate::error::QueryError;
use crate::period::Period;
use crate::reports::{self, ReportSettings};
use crate::rounding::{MONEY_SCALE, format_fixed};

/// The columns of the margin report.
pub const MARGIN_COLUMNS: [&str; 5] = ["tenant_id", "revenue", "cost", "margin", "margin_pct"];

/// Margin per tenant: revenue = invoice total, cost = Σ its allocated amounts,
/// margin = revenue − cost, margin % = margin / revenue × 100 rounded half away
/// from zero to 2 places (empty when revenue is 0). Rows by tenant id, every
/// tenant with an invoice or an allocation (`__unallocated__` included).
pub fn margin_rows(
    invoices: &[BilledInvoice],
    allocation: &[Vec<String>],
) -> Result<Vec<Vec<String>>, QueryError> {
    let mut figures: BTreeMap<String, (BigDecimal, BigDecimal)> = BTreeMap::new();
    for invoice in invoices {
        figures.entry(invoice.tenant_id.clone()).or_default().0 += invoice.total()?;
    }
    for row in allocation {
        let amount = BigDecimal::from_str(&row[5])
            .map_err(|_| QueryError::Stored(format!("allocation amount {:?}", row[5])))?;
        figures.entry(row[2].clone()).or_default().1 += amount;
    }
    Ok(figures
        .into_iter()
        .map(|(tenant, (revenue, cost))| {
            let margin = &revenue - &cost;
            let pct = if revenue.is_zero() {
                String::new()
            } else {
                format_fixed(
                    &crate::rounding::div_round(
                        &(&margin * BigDecimal::from(100)),
                        &revenue,
                        MONEY_SCALE,
                        crate::rounding::Rounding::HalfAwayFromZero,
                    ),
                    MONEY_SCALE,
                )
            };
            vec![
                tenant,
                format_fixed(&revenue, MONEY_SCALE),
                format_fixed(&cost, MONEY_SCALE),
                format_fixed(&margin, MONEY_SCALE),
                pct,
            ]
        })
        .collect())
}

/// A month's margin report.
pub struct Margin {
    /// Whether the month is closed (its invoices final), else a draft.
    pub closed: bool,
    /// The rows, [`MARGIN_COLUMNS`].
    pub rows: Vec<Vec<String>>,
}

/// The margin of `period`: its current invoices (final when closed) against
/// its allocation, the frozen one of a closing that froze one, else one
/// computed now from `pools` (asked for only then; its error is the caller's).
pub async fn month_margin<E: From<QueryError>>(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    pools: impl FnOnce() -> Result<Vec<CostPool>, E>,
) -> Result<Margin, E> {
    let all = closings(location).await?;
    let closed = find_closing(&all, period, None);
    let invoices = month_invoices(
        location,
        snapshot,
        settings,
        period,
        None,
        InvoiceView::Current,
    )
    .await?;
    let allocation = match closed {
        Some(closed) if closed.costs_text.is_some() => stored_allocation(location, closed).await?,
        _ => {
            let pools = pools()?;
            reports::allocation(snapshot, settings, &pools, period)
                .await?
                .iter()
                .map(AllocationRow::csv_record)
                .collect()
        }
    };
    Ok(Margin {
        closed: closed.is_some(),
        rows: margin_rows(&invoices, &allocation)?,
    })
}
