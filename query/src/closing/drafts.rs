//! A month's drafts: its invoices as billed now, with the adjustments of a
//! closed month before and the credit drawn against the balances earlier
//! invoices left.

use std::collections::BTreeMap;

use allot_lake::snapshot::LakeSnapshot;
use bigdecimal::{BigDecimal, Zero};

use super::store::PreviousClose;
use crate::billed::{BilledInvoice, adjustment_rows, empty_invoice};
use crate::credits::{self, Drawn, TenantDrawn};
use crate::error::QueryError;
use crate::period::Period;
use crate::reports::{self, ReportSettings};

/// The invoices of `period` as billed now (drafts): its usage with `settings`,
/// plus, when the month before is closed (`previous`), the adjustment lines of
/// its late events, for every tenant with usage or adjustments (or `tenant`).
/// `drawn` is the credit each tenant's invoices of earlier months drew
/// ([`super::ledger::drawn_before`]): the month before is redrawn
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
