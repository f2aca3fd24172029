//! The credit ledger: what each month's invoices drew from each grant, walked
//! from the first month a grant pays, so a month knows its balances
//! (docs/reference.md#commitments-and-credits).
//!
//! ```text
//! first month a grant pays ─▶ … ─▶ month K ─▶ … ─▶ the month asked
//!   K closed: its newest final invoices, as stored
//!   K open:   its drafts, drawing against the balances walked so far
//!   each: `credit` rows (K's own draws) + credit redraws (for K − 1)
//! ```
//!
//! The carry rule: the balance of a grant for month N is its amount less the
//! draws *billed* for the months before N — a closed month's frozen draws, the
//! redraws later invoices made for it, an open month's draft draws — never a
//! live recomputation of a closed month. So what a tenant was told it drew is
//! what its balance lost, and a late event moves the balance exactly by the
//! redraw its adjustment bills.
//!
//! A walk costs one invoice computation per open month (stored invoices are
//! read, not recomputed), of the tenants with grants only, and is taken only
//! when a tenant in view has grants.

use std::collections::{BTreeMap, BTreeSet};

use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::layout::LakeLocation;
use bigdecimal::{BigDecimal, Zero};

use super::drafts::billed_invoices;
use super::store::{Closing, PreviousClose, closings, find_closing, stored_invoices};
use crate::billed::BilledInvoice;
use crate::credits::{Drawn, Grant, TenantDrawn, add_drawn, draw_order, own_draws, redraws};
use crate::error::QueryError;
use crate::period::Period;
use crate::reports::ReportSettings;
use crate::rounding::{MONEY_SCALE, format_fixed};

/// What one tenant's invoice of a month drew: on its own total, and redrawn
/// for the month before.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MonthCredits {
    own: Drawn,
    redrawn_for_previous: Drawn,
}

/// The draws of the months walked, per month, per tenant.
#[derive(Debug, Default)]
struct History {
    months: BTreeMap<Period, BTreeMap<String, MonthCredits>>,
}

impl History {
    fn record(&mut self, month: Period, invoices: &[BilledInvoice]) -> Result<(), QueryError> {
        let entry = self.months.entry(month).or_default();
        for invoice in invoices {
            let credits = MonthCredits {
                own: own_draws(&invoice.rows)?,
                redrawn_for_previous: redraws(&invoice.rows)?,
            };
            if credits != MonthCredits::default() {
                entry.insert(invoice.tenant_id.clone(), credits);
            }
        }
        Ok(())
    }

    /// Everything the invoices of months before `period` drew.
    fn drawn_before(&self, period: Period) -> TenantDrawn {
        let mut drawn = TenantDrawn::new();
        for (_, tenants) in self.months.range(..period) {
            for (tenant, credits) in tenants {
                let into = drawn.entry(tenant.clone()).or_default();
                add_drawn(into, &credits.own);
                add_drawn(into, &credits.redrawn_for_previous);
            }
        }
        drawn
    }

    fn of(&self, month: Period, tenant: &str) -> MonthCredits {
        self.months
            .get(&month)
            .and_then(|tenants| tenants.get(tenant))
            .cloned()
            .unwrap_or_default()
    }
}

/// Up to this many tenants with grants in view, a walk computes each one's
/// months on its own (one tenant's invoice costs a small part of every
/// tenant's); above it, every tenant's months at once.
const PER_TENANT_WALKS: usize = 16;

/// The first month a grant pays, per tenant with grants in view: of
/// `settings` and of the closing of the month before `period` (whose redraw
/// the month bills), for `tenant` or every tenant.
fn credit_starts(
    settings: &ReportSettings,
    all: &[Closing],
    period: Period,
    tenant: Option<&str>,
) -> Result<BTreeMap<String, Period>, QueryError> {
    let recorded = match find_closing(all, period.prev(), None) {
        Some(closing) => Some(closing.settings()?),
        None => None,
    };
    let mut starts: BTreeMap<String, Period> = BTreeMap::new();
    for book in std::iter::once(&settings.book).chain(recorded.as_ref().map(|s| &s.book)) {
        for (id, grants) in book
            .tenants_with_credits()
            .filter(|(id, _)| tenant.is_none_or(|t| t == *id))
        {
            for grant in grants {
                let month = Period::containing(grant.effective_from)?;
                let first = starts.entry(id.to_string()).or_insert(month);
                *first = (*first).min(month);
            }
        }
    }
    Ok(starts)
}

/// Walks the months from the first a grant in view pays through `last`
/// (included), each as billed now: a closed month's newest final invoices, an
/// open month's drafts under `settings`. Only tenants with grants are walked:
/// each on its own when they are few ([`PER_TENANT_WALKS`]), else together.
async fn walk(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    last: Period,
    tenant: Option<&str>,
) -> Result<History, QueryError> {
    let all = closings(location).await?;
    let starts = credit_starts(settings, &all, last.next(), tenant)?;
    let mut history = History::default();
    let walks: Vec<(Option<&str>, Period)> = match starts.values().min() {
        None => Vec::new(),
        Some(&first) if tenant.is_some() || starts.len() > PER_TENANT_WALKS => {
            vec![(tenant, first)]
        }
        Some(_) => starts
            .iter()
            .map(|(id, first)| (Some(id.as_str()), *first))
            .collect(),
    };
    for (tenant, first) in walks {
        let mut month = first;
        while month <= last {
            let invoices = match find_closing(&all, month, None) {
                Some(closed) => stored_invoices(location, closed, tenant).await?,
                None => {
                    let previous = match find_closing(&all, month.prev(), None) {
                        Some(closed) => Some(PreviousClose::load(location, closed).await?),
                        None => None,
                    };
                    let drawn = history.drawn_before(month);
                    billed_invoices(snapshot, settings, month, tenant, previous.as_ref(), &drawn)
                        .await?
                }
            };
            history.record(month, &invoices)?;
            month = month.next();
        }
    }
    Ok(history)
}

/// The credit drawn, per tenant (or `tenant` only) and grant, by the invoices
/// of the months before `period` as billed now: what `period`'s draws are
/// taken against. Empty when no tenant in view has grants.
pub async fn drawn_before(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: Option<&str>,
) -> Result<TenantDrawn, QueryError> {
    let history = walk(location, snapshot, settings, period.prev(), tenant).await?;
    Ok(history.drawn_before(period))
}

/// The columns of a credit statement.
pub const CREDIT_COLUMNS: [&str; 8] = [
    "tenant_id",
    "period",
    "grant",
    "expires",
    "opening_balance",
    "drawn",
    "expired",
    "closing_balance",
];

/// One grant of one tenant over one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditBalance {
    /// The tenant.
    pub tenant_id: String,
    /// The month.
    pub period: Period,
    /// The grant.
    pub grant: Grant,
    /// Its balance for the month: its amount less what was billed for the
    /// months before.
    pub opening: BigDecimal,
    /// What was billed for the month from it: the month's own draw and any
    /// redraw billed for it since.
    pub drawn: BigDecimal,
    /// What lapsed unused, in the last month the grant pays.
    pub expired: BigDecimal,
    /// opening − drawn − expired.
    pub closing: BigDecimal,
}

impl CreditBalance {
    /// The row, in [`CREDIT_COLUMNS`] order.
    pub fn csv_record(&self) -> Vec<String> {
        vec![
            self.tenant_id.clone(),
            self.period.to_string(),
            self.grant.id.clone(),
            self.grant
                .expires
                .and_then(chrono::DateTime::from_timestamp_micros)
                .map(|expires| expires.format("%Y-%m-%d").to_string())
                .unwrap_or_default(),
            format_fixed(&self.opening, MONEY_SCALE),
            format_fixed(&self.drawn, MONEY_SCALE),
            format_fixed(&self.expired, MONEY_SCALE),
            format_fixed(&self.closing, MONEY_SCALE),
        ]
    }
}

/// The credit statement of `period`: for every grant that pays it (of
/// `tenant`, or of every tenant), its opening balance, what was drawn for the
/// month (including redraws billed for it on the next invoice), what expired
/// unused after it, and its closing balance; ordered by tenant, then in draw
/// order. The grants are those of the configuration the month is billed
/// under: its newest closing's, else `settings`.
pub async fn credit_statement(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    settings: &ReportSettings,
    period: Period,
    tenant: Option<&str>,
) -> Result<Vec<CreditBalance>, QueryError> {
    let all = closings(location).await?;
    let recorded = match find_closing(&all, period, None) {
        Some(closing) => Some(closing.settings()?),
        None => None,
    };
    let book = &recorded.as_ref().unwrap_or(settings).book;
    let tenants: BTreeSet<&str> = book
        .tenants_with_credits()
        .map(|(id, _)| id)
        .filter(|id| tenant.is_none_or(|t| t == *id))
        .collect();
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    let history = walk(location, snapshot, settings, period.next(), tenant).await?;
    let before = history.drawn_before(period);
    let zero = BigDecimal::zero();
    let mut statement = Vec::new();
    for tenant in tenants {
        let this = history.of(period, tenant);
        let next = history.of(period.next(), tenant);
        let mut taken_before = before.get(tenant).cloned().unwrap_or_default();
        add_drawn(&mut taken_before, &this.redrawn_for_previous);
        for grant in draw_order(book.credit_grants(tenant), period) {
            let opening = grant.balance(&taken_before);
            let drawn = this.own.get(&grant.id).unwrap_or(&zero)
                + next.redrawn_for_previous.get(&grant.id).unwrap_or(&zero);
            let left = &opening - &drawn;
            let expired = if grant.lapses_after(period) && left > zero {
                left.clone()
            } else {
                zero.clone()
            };
            statement.push(CreditBalance {
                tenant_id: tenant.to_string(),
                period,
                grant: grant.clone(),
                closing: &left - &expired,
                opening,
                drawn,
                expired,
            });
        }
    }
    Ok(statement)
}
