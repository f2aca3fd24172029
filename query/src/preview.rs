//! What-if pricing (docs/reference.md#what-if-pricing): months priced under a
//! proposed price book beside what they are billed, written nowhere.
//!
//! ```text
//! months ─┬─ open ───▶ one read of [first open, last open) ─▶ each month priced
//!         │            (current snapshot, rollups)            by both books
//!         └─ closed ─▶ its final invoices (actual) + its usage at the recorded
//!                      `usage_events` version priced by the proposed book
//! ```
//!
//! The *actual* side is the month as billed: a closed month's newest final
//! invoice, an open month's draft under the current configuration. Adjustment
//! lines (late events of the month before, already priced by that month's
//! recorded configuration) are the same on both sides: they are another
//! month's charges. So previewing a month with its own price book gives back
//! its invoice's total to the cent, and the difference is the month's own
//! usage repriced.
//!
//! Credits: both sides of a month draw against the same balances, the ones
//! the invoices billed before it left ([`crate::closing::ledger`]); the
//! proposed side draws from the proposed book's grants. So a proposal's
//! credits change what a month pays, not what earlier months were billed.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use allot_lake::snapshot::LakeSnapshot;
use allot_schemas::layout::LakeLocation;
use bigdecimal::{BigDecimal, Zero};

use crate::billed::{BilledInvoice, KIND_ADJUSTMENT, KIND_TRUE_UP, col};
use crate::closing::{
    PreviousClose, billed_invoices, closings, drawn_before, find_closing, stored_invoices,
};
use crate::credits::{self, Drawn, KIND_CREDIT, TenantDrawn};
use crate::error::QueryError;
use crate::period::Period;
use crate::pricing::{Invoice, TenantUsage, invoice};
use crate::reports::{ReportSettings, dimension_grouping, regroup, session_for, usage_between};
use crate::rounding::{MONEY_SCALE, format_fixed};
use crate::usage::{ClassGrouping, UsageFilter};

/// The columns of the per-tenant preview.
pub const PREVIEW_COLUMNS: [&str; 5] = [
    "tenant_id",
    "period",
    "actual_total",
    "proposed_total",
    "difference",
];

/// The columns of the per-line preview: one row per metric, then `discount`,
/// `commitment_true_up`, `credits` and `adjustments`, then `total`.
pub const PREVIEW_LINE_COLUMNS: [&str; 6] = [
    "tenant_id",
    "period",
    "item",
    "actual_amount",
    "proposed_amount",
    "difference",
];

/// The most months one preview prices.
pub const MAX_PREVIEW_MONTHS: usize = 120;

/// The most bytes of a proposed price book (a file or a request body).
pub const MAX_PRICE_BOOK_BYTES: usize = 256 * 1024;

/// The months of a preview: `month` (`YYYY-MM`) or `range` (`A..B`, both
/// included, A not after B), exactly one of them, at most
/// [`MAX_PREVIEW_MONTHS`].
pub fn preview_months(month: Option<&str>, range: Option<&str>) -> Result<Vec<Period>, QueryError> {
    let (first, last) = match (month, range) {
        (Some(month), None) => {
            let month = Period::parse(month)?;
            (month, month)
        }
        (None, Some(range)) => {
            let (a, b) = range.split_once("..").ok_or_else(|| {
                QueryError::InvalidInput(format!(
                    "months {range:?}: give a range as YYYY-MM..YYYY-MM"
                ))
            })?;
            (Period::parse(a)?, Period::parse(b)?)
        }
        _ => {
            return Err(QueryError::InvalidInput(
                "give one month or one range of months".to_string(),
            ));
        }
    };
    if first > last {
        return Err(QueryError::InvalidInput(format!(
            "months {first}..{last}: the range ends before it starts"
        )));
    }
    let mut months = vec![first];
    while let Some(&latest) = months.last()
        && latest < last
    {
        if months.len() == MAX_PREVIEW_MONTHS {
            return Err(QueryError::InvalidInput(format!(
                "months {first}..{last}: at most {MAX_PREVIEW_MONTHS} months at once"
            )));
        }
        months.push(latest.next());
    }
    Ok(months)
}

/// One tenant's month under both price books: amounts per item (metric, then
/// `discount`, `commitment_true_up`, `credits`, `adjustments`) and totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPreview {
    /// The tenant.
    pub tenant_id: String,
    /// The month.
    pub period: Period,
    /// The month as billed, per item.
    pub actual: BTreeMap<String, BigDecimal>,
    /// The month under the proposed book, per item.
    pub proposed: BTreeMap<String, BigDecimal>,
    /// The billed total.
    pub actual_total: BigDecimal,
    /// The total under the proposed book.
    pub proposed_total: BigDecimal,
}

impl TenantPreview {
    /// The per-tenant row, in [`PREVIEW_COLUMNS`] order.
    pub fn csv_record(&self) -> Vec<String> {
        vec![
            self.tenant_id.clone(),
            self.period.to_string(),
            money(&self.actual_total),
            money(&self.proposed_total),
            money(&(&self.proposed_total - &self.actual_total)),
        ]
    }

    /// The per-item rows then the total, in [`PREVIEW_LINE_COLUMNS`] order.
    pub fn line_records(&self) -> Vec<Vec<String>> {
        let zero = BigDecimal::zero();
        let mut items: Vec<&String> = self.actual.keys().chain(self.proposed.keys()).collect();
        items.sort_by_key(|item| (item_rank(item), item.to_string()));
        items.dedup();
        let row = |item: &str, actual: &BigDecimal, proposed: &BigDecimal| {
            vec![
                self.tenant_id.clone(),
                self.period.to_string(),
                item.to_string(),
                money(actual),
                money(proposed),
                money(&(proposed - actual)),
            ]
        };
        let mut rows: Vec<Vec<String>> = items
            .into_iter()
            .map(|item| {
                row(
                    item,
                    self.actual.get(item).unwrap_or(&zero),
                    self.proposed.get(item).unwrap_or(&zero),
                )
            })
            .collect();
        rows.push(row("total", &self.actual_total, &self.proposed_total));
        rows
    }
}

/// Metrics first, then the invoice-wide items in invoice order.
fn item_rank(item: &str) -> u8 {
    match item {
        "discount" => 1,
        KIND_TRUE_UP => 2,
        CREDITS_ITEM => 3,
        "adjustments" => 4,
        _ => 0,
    }
}

/// The item of the credit drawn on the month's own total.
const CREDITS_ITEM: &str = "credits";

fn money(amount: &BigDecimal) -> String {
    format_fixed(amount, MONEY_SCALE)
}

fn parse(text: &str) -> Result<BigDecimal, QueryError> {
    BigDecimal::from_str(text)
        .map_err(|_| QueryError::Stored(format!("stored amount {text:?} is not a decimal")))
}

/// The items of a billed invoice: usage amounts per metric, the discount, the
/// true-up, the credit drawn and the sum of adjustment lines.
fn billed_items(billed: &BilledInvoice) -> Result<BTreeMap<String, BigDecimal>, QueryError> {
    let mut items: BTreeMap<String, BigDecimal> = BTreeMap::new();
    for row in &billed.rows {
        let item = match row[col::KIND].as_str() {
            "" if row[col::METRIC] == "discount" => "discount",
            "" => continue,
            KIND_ADJUSTMENT => "adjustments",
            KIND_TRUE_UP => KIND_TRUE_UP,
            KIND_CREDIT => CREDITS_ITEM,
            _ => row[col::METRIC].as_str(),
        };
        *items
            .entry(item.to_string())
            .or_insert_with(BigDecimal::zero) += parse(&row[col::AMOUNT])?;
    }
    Ok(items)
}

/// The items of a computed invoice with `credits` drawn on it, plus
/// `adjustments` carried from the billed side.
fn invoice_items(
    invoice: &Invoice,
    credits: &BigDecimal,
    adjustments: &BigDecimal,
) -> BTreeMap<String, BigDecimal> {
    let mut items: BTreeMap<String, BigDecimal> = BTreeMap::new();
    for line in &invoice.lines {
        *items
            .entry(line.metric.clone())
            .or_insert_with(BigDecimal::zero) += &line.amount;
    }
    items.insert("discount".to_string(), invoice.discount.clone());
    if !invoice.true_up.is_zero() {
        items.insert(KIND_TRUE_UP.to_string(), invoice.true_up.clone());
    }
    if !credits.is_zero() {
        items.insert(CREDITS_ITEM.to_string(), credits.clone());
    }
    if !adjustments.is_zero() {
        items.insert("adjustments".to_string(), adjustments.clone());
    }
    items
}

/// A month's actual side, per tenant: its billed invoices.
type Billed = BTreeMap<String, BilledInvoice>;

/// `months` (ascending, each once) of every tenant with an invoice under either
/// book (or of `tenant`), priced under `proposed` beside what they are billed
/// under `current`; ordered by month, then tenant.
pub async fn preview(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    current: &ReportSettings,
    proposed: &ReportSettings,
    months: &[Period],
    tenant: Option<&str>,
) -> Result<Vec<TenantPreview>, QueryError> {
    let all = closings(location).await?;
    let filter = UsageFilter {
        tenant: tenant.map(str::to_string),
        ..UsageFilter::default()
    };
    let open: Vec<Period> = months
        .iter()
        .copied()
        .filter(|m| find_closing(&all, *m, None).is_none())
        .collect();
    let mut previews = Vec::new();
    // What the invoices before each month drew from each grant, as billed: both
    // sides of a month draw against it.
    let mut drawn = match months.first() {
        Some(&first) => drawn_before(location, snapshot, current, first, tenant).await?,
        None => TenantDrawn::new(),
    };

    // Open months: one read of their span, priced month by month by both books.
    let mut open_usage = BTreeMap::new();
    let grouping = dimension_grouping(&[&current.book, &proposed.book]);
    if let (Some(first), Some(last)) = (open.first(), open.last()) {
        let session = session_for(snapshot, current, tenant).await?;
        open_usage = usage_between(
            &session,
            current,
            &grouping,
            &filter,
            None,
            first.start_micros(),
            last.end_micros(),
        )
        .await?;
    }

    for &month in months {
        match find_closing(&all, month, None) {
            Some(closed) => {
                let finals: Billed = stored_invoices(location, closed, tenant)
                    .await?
                    .into_iter()
                    .map(|i| (i.tenant_id.clone(), i))
                    .collect();
                // The month's usage as the close read it, priced by the proposal.
                let at_close = LakeSnapshot::load_at(location, Some(closed.usage_version)).await?;
                let mut settings = proposed.clone();
                settings.use_rollups = false;
                let session = session_for(&at_close, &settings, tenant).await?;
                let grouping = dimension_grouping(&[&proposed.book]);
                let usage = usage_between(
                    &session,
                    &settings,
                    &grouping,
                    &filter,
                    None,
                    month.start_micros(),
                    month.end_micros(),
                )
                .await?;
                previews.extend(month_previews(
                    proposed, month, &usage, &grouping, &finals, &drawn,
                )?);
                carry_credits(&mut drawn, &finals)?;
            }
            None => {
                // The draft as billed needs the adjustments of a closed month
                // before; without one it is the usage under the current book.
                let drafts: Billed = if let Some(closed) = find_closing(&all, month.prev(), None) {
                    let previous = PreviousClose::load(location, closed).await?;
                    billed_invoices(snapshot, current, month, tenant, Some(&previous), &drawn)
                        .await?
                        .into_iter()
                        .map(|i| (i.tenant_id.clone(), i))
                        .collect()
                } else {
                    let mut drafts = BTreeMap::new();
                    for (t, usage) in &open_usage {
                        let priced = invoice(
                            &current.book,
                            &current.catalog,
                            month,
                            &regroup(usage, &grouping, &current.book),
                        )?;
                        if !priced.lines.is_empty() {
                            let draws = credits::draw(
                                current.book.credit_grants(t),
                                month,
                                drawn.get(t).unwrap_or(&Drawn::new()),
                                &priced.total,
                            );
                            let credit_rows = credits::credit_rows(t, month, &draws);
                            drafts.insert(
                                t.clone(),
                                BilledInvoice::draft_with_credits(&priced, credit_rows, Vec::new()),
                            );
                        }
                    }
                    drafts
                };
                previews.extend(month_previews(
                    proposed,
                    month,
                    &open_usage,
                    &grouping,
                    &drafts,
                    &drawn,
                )?);
                carry_credits(&mut drawn, &drafts)?;
            }
        }
    }
    Ok(previews)
}

/// Adds what a month's invoices drew (their own draws and their redraws of the
/// month before) to `drawn`, for the months after it.
fn carry_credits(drawn: &mut TenantDrawn, billed: &Billed) -> Result<(), QueryError> {
    for (tenant, invoice) in billed {
        let own = credits::own_draws(&invoice.rows)?;
        let redrawn = credits::redraws(&invoice.rows)?;
        if own.is_empty() && redrawn.is_empty() {
            continue;
        }
        let into = drawn.entry(tenant.clone()).or_default();
        credits::add_drawn(into, &own);
        credits::add_drawn(into, &redrawn);
    }
    Ok(())
}

/// The previews of one month: `billed` as the actual side, `usage` (grouped by
/// `grouping`) priced by `proposed` plus the billed adjustments as the
/// proposed side, for every tenant with lines on either. The proposed total
/// draws credit from the proposed book's grants against the same balances as
/// the billed one: `drawn` by the months before, plus what the billed
/// invoice redrew for the month before.
fn month_previews(
    proposed: &ReportSettings,
    month: Period,
    usage: &BTreeMap<String, TenantUsage>,
    grouping: &ClassGrouping,
    billed: &Billed,
    drawn: &TenantDrawn,
) -> Result<Vec<TenantPreview>, QueryError> {
    let tenants: BTreeSet<&String> = usage.keys().chain(billed.keys()).collect();
    let mut previews = Vec::new();
    for tenant in tenants {
        let actual = billed.get(tenant);
        let actual_items = actual.map(billed_items).transpose()?.unwrap_or_default();
        let actual_total = actual
            .map(BilledInvoice::total)
            .transpose()?
            .unwrap_or_else(BigDecimal::zero);
        let adjustments = actual_items
            .get("adjustments")
            .cloned()
            .unwrap_or_else(BigDecimal::zero);
        let priced = match usage.get(tenant) {
            Some(u) => Some(
                invoice(
                    &proposed.book,
                    &proposed.catalog,
                    month,
                    &regroup(u, grouping, &proposed.book),
                )
                .map_err(|e| match e {
                    // Usage the proposal cannot price is the proposal's to fix.
                    QueryError::NoRate { .. } => {
                        QueryError::InvalidInput(format!("the proposed price book: {e}"))
                    }
                    other => other,
                })?,
            ),
            None => None,
        };
        let has_lines = priced.as_ref().is_some_and(|p| !p.lines.is_empty());
        if actual.is_none() && !has_lines {
            continue;
        }
        let (proposed_items, proposed_total) = match priced.filter(|_| has_lines) {
            Some(p) => {
                let mut before = drawn.get(tenant).cloned().unwrap_or_default();
                if let Some(actual) = actual {
                    credits::add_drawn(&mut before, &credits::redraws(&actual.rows)?);
                }
                let draws = credits::draw(
                    proposed.book.credit_grants(tenant),
                    month,
                    &before,
                    &p.total,
                );
                let credited: BigDecimal = -draws.into_iter().map(|(_, a)| a).sum::<BigDecimal>();
                (
                    invoice_items(&p, &credited, &adjustments),
                    &p.total + &credited + &adjustments,
                )
            }
            None => {
                let mut items = BTreeMap::new();
                if !adjustments.is_zero() {
                    items.insert("adjustments".to_string(), adjustments.clone());
                }
                (items, adjustments.clone())
            }
        };
        previews.push(TenantPreview {
            tenant_id: tenant.clone(),
            period: month,
            actual: actual_items,
            proposed: proposed_items,
            actual_total,
            proposed_total: proposed_total.with_scale(MONEY_SCALE),
        });
    }
    Ok(previews)
}
