//! Prepaid credits (docs/reference.md#commitments-and-credits): which grants
//! pay a month's total, in what order, and the invoice rows that say so.
//!
//! ```text
//! month M's total ──▶ grants paying M, by earliest `expires` (none last),
//! (after discount     then higher `priority`, then `id`
//!  and true-up)   ──▶ each drawn up to its balance until the total is 0
//!                 ──▶ one `credit` row per draw (negative, `adjusts` = grant)
//! ```
//!
//! A grant's **balance** for a month is its amount less every draw billed for
//! earlier months: the `credit` rows of their invoices and the credit
//! redraws (adjustment rows with metric `credit`) billed for them. Which
//! invoices those are, closed or drafts, is [`ledger`]'s to walk; this module
//! is the arithmetic over one month, with exact decimals and no rounding
//! (grants are whole cents, totals are whole cents).
//!
//! A closed month's draws are frozen in its final invoice. When late events
//! change it, the next invoice redraws the month against the balances as they
//! stood for it ([`redraw_rows`]): one adjustment row per grant whose draw
//! moved, so the balance carried into later months moves with it.

use std::collections::BTreeMap;
use std::str::FromStr;

use allot_schemas::config::CreditGrant;
use allot_schemas::table_schema::INVOICE_CSV_COLUMNS;
use allot_schemas::time::day_start_micros;
use bigdecimal::{BigDecimal, Zero};

use crate::billed::{KIND_ADJUSTMENT, col};
use crate::error::QueryError;
use crate::period::Period;
use crate::rounding::{MONEY_SCALE, format_fixed};

/// `kind` of a credit draw on a month's own total.
pub const KIND_CREDIT: &str = "credit";
/// `metric` of an adjustment row that redraws a closed month's credit.
pub const CREDIT_REDRAW_METRIC: &str = "credit";
/// How a credit redraw names its grant in the `dimensions` column.
const GRANT_PREFIX: &str = "grant=";

/// Credit drawn per grant id.
pub type Drawn = BTreeMap<String, BigDecimal>;

/// Credit drawn per tenant, per grant id.
pub type TenantDrawn = BTreeMap<String, Drawn>;

/// One prepaid credit grant of a tenant, as priced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The grant's id, unique within its tenant.
    pub id: String,
    /// The credit granted.
    pub amount: BigDecimal,
    /// From when it pays, UTC microseconds.
    pub effective_from: i64,
    /// When it lapses (exclusive), UTC microseconds; `None`, never.
    pub expires: Option<i64>,
    /// Drawn earlier among grants expiring together when higher.
    pub priority: i64,
}

impl Grant {
    /// The grant of a validated configuration entry.
    pub fn from_config(grant: &CreditGrant) -> Grant {
        Grant {
            id: grant.id.clone(),
            amount: grant.amount.0.clone(),
            effective_from: day_start_micros(grant.effective_from.0),
            expires: grant.expires.map(|date| day_start_micros(date.0)),
            priority: grant.priority.unwrap_or(0),
        }
    }

    /// Whether the grant pays `period`'s total: it is in effect at some
    /// instant of the month.
    pub fn pays(&self, period: Period) -> bool {
        self.effective_from < period.end_micros()
            && self.expires.is_none_or(|e| e > period.start_micros())
    }

    /// Whether `period` is the last month the grant pays: what is left after
    /// it expires.
    pub fn lapses_after(&self, period: Period) -> bool {
        self.pays(period) && self.expires.is_some_and(|e| e <= period.end_micros())
    }

    /// What is left of the grant after `drawn`, never below zero.
    pub fn balance(&self, drawn: &Drawn) -> BigDecimal {
        let left = &self.amount
            - drawn
                .get(&self.id)
                .cloned()
                .unwrap_or_else(BigDecimal::zero);
        if left > BigDecimal::zero() {
            left
        } else {
            BigDecimal::zero()
        }
    }
}

/// The grants of `grants` that pay `period`, in the order they are drawn:
/// earliest `expires` first (none last), then higher `priority`, then `id`.
pub fn draw_order(grants: &[Grant], period: Period) -> Vec<&Grant> {
    let mut paying: Vec<&Grant> = grants.iter().filter(|g| g.pays(period)).collect();
    paying.sort_by(|a, b| {
        let expiry = |g: &Grant| g.expires.unwrap_or(i64::MAX);
        expiry(a)
            .cmp(&expiry(b))
            .then(b.priority.cmp(&a.priority))
            .then(a.id.cmp(&b.id))
    });
    paying
}

/// The draws (grant id, amount above zero) that pay `total` of `period` from
/// `grants`, each grant holding its amount less `drawn_before`: in
/// [`draw_order`], each up to its balance, until the total is paid. A total of
/// zero or less draws nothing.
pub fn draw(
    grants: &[Grant],
    period: Period,
    drawn_before: &Drawn,
    total: &BigDecimal,
) -> Vec<(String, BigDecimal)> {
    let mut owed = total.clone();
    let mut draws = Vec::new();
    for grant in draw_order(grants, period) {
        if owed <= BigDecimal::zero() {
            break;
        }
        let balance = grant.balance(drawn_before);
        let taken = if balance < owed {
            balance
        } else {
            owed.clone()
        };
        if taken > BigDecimal::zero() {
            owed -= &taken;
            draws.push((grant.id.clone(), taken));
        }
    }
    draws
}

fn money_row(tenant: &str, period: Period, amount: &BigDecimal) -> Vec<String> {
    let mut row = vec![String::new(); INVOICE_CSV_COLUMNS.len()];
    row[col::TENANT] = tenant.to_string();
    row[col::PERIOD] = period.to_string();
    row[col::AMOUNT] = format_fixed(amount, MONEY_SCALE);
    row
}

/// The `credit` rows of `draws` on `tenant`'s invoice of `period`: no metric,
/// the negated draw in `amount`, the grant in `adjusts`.
pub fn credit_rows(
    tenant: &str,
    period: Period,
    draws: &[(String, BigDecimal)],
) -> Vec<Vec<String>> {
    draws
        .iter()
        .map(|(grant, amount)| {
            let mut row = money_row(tenant, period, &-amount);
            row[col::KIND] = KIND_CREDIT.to_string();
            row[col::ADJUSTS] = grant.clone();
            row
        })
        .collect()
}

/// The adjustment rows, on `tenant`'s invoice of `billed_in`, that move the
/// credit drawn for `adjusted` from `frozen` (its final invoice's draws) to
/// `redrawn`: one per grant whose draw changed, metric `credit`, the grant in
/// `dimensions` as `grant=<id>`, the negated change in `amount`.
pub fn redraw_rows(
    tenant: &str,
    billed_in: Period,
    adjusted: Period,
    frozen: &Drawn,
    redrawn: &Drawn,
) -> Vec<Vec<String>> {
    let zero = BigDecimal::zero();
    let mut grants: Vec<&String> = frozen.keys().chain(redrawn.keys()).collect();
    grants.sort();
    grants.dedup();
    let mut rows = Vec::new();
    for grant in grants {
        let change = redrawn.get(grant).unwrap_or(&zero) - frozen.get(grant).unwrap_or(&zero);
        if change.is_zero() {
            continue;
        }
        let mut row = money_row(tenant, billed_in, &-change);
        row[col::METRIC] = CREDIT_REDRAW_METRIC.to_string();
        row[col::KIND] = KIND_ADJUSTMENT.to_string();
        row[col::ADJUSTS] = adjusted.to_string();
        row[col::DIMENSIONS] = format!("{GRANT_PREFIX}{grant}");
        rows.push(row);
    }
    rows
}

fn add_draw(drawn: &mut Drawn, grant: &str, amount_text: &str) -> Result<(), QueryError> {
    let amount = BigDecimal::from_str(amount_text).map_err(|_| {
        QueryError::Stored(format!(
            "stored credit amount {amount_text:?} is not a decimal"
        ))
    })?;
    // Rows carry the draw negated.
    *drawn
        .entry(grant.to_string())
        .or_insert_with(BigDecimal::zero) -= amount;
    Ok(())
}

/// The credit an invoice's rows drew on its own month's total, per grant.
pub fn own_draws(rows: &[Vec<String>]) -> Result<Drawn, QueryError> {
    let mut drawn = Drawn::new();
    for row in rows.iter().filter(|row| row[col::KIND] == KIND_CREDIT) {
        add_draw(&mut drawn, &row[col::ADJUSTS], &row[col::AMOUNT])?;
    }
    Ok(drawn)
}

/// The credit an invoice's rows redrew for the month before, per grant.
pub fn redraws(rows: &[Vec<String>]) -> Result<Drawn, QueryError> {
    let mut drawn = Drawn::new();
    for row in rows.iter().filter(|row| is_redraw(row)) {
        let grant = row[col::DIMENSIONS]
            .strip_prefix(GRANT_PREFIX)
            .unwrap_or(&row[col::DIMENSIONS]);
        add_draw(&mut drawn, grant, &row[col::AMOUNT])?;
    }
    Ok(drawn)
}

/// Whether `row` is a credit redraw (an adjustment of a month's credit).
pub fn is_redraw(row: &[String]) -> bool {
    row[col::KIND] == KIND_ADJUSTMENT && row[col::METRIC] == CREDIT_REDRAW_METRIC
}

/// `into` plus `more`, grant by grant.
pub fn add_drawn(into: &mut Drawn, more: &Drawn) {
    for (grant, amount) in more {
        *into.entry(grant.clone()).or_insert_with(BigDecimal::zero) += amount;
    }
}

/// `from` less `less`, grant by grant.
pub fn less_drawn(from: &Drawn, less: &Drawn) -> Drawn {
    let mut left = from.clone();
    for (grant, amount) in less {
        *left.entry(grant.clone()).or_insert_with(BigDecimal::zero) -= amount;
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> BigDecimal {
        BigDecimal::from_str(text).unwrap()
    }

    fn at(date: &str) -> i64 {
        day_start_micros(chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap())
    }

    fn grant(id: &str, amount: &str, from: &str, expires: Option<&str>, priority: i64) -> Grant {
        Grant {
            id: id.into(),
            amount: d(amount),
            effective_from: at(from),
            expires: expires.map(at),
            priority,
        }
    }

    #[test]
    fn grants_are_drawn_by_expiry_then_priority_then_id() {
        let march: Period = "2026-03".parse().unwrap();
        let grants = [
            grant("zz-late", "100.00", "2026-01-01", None, 9),
            grant("b-high", "30.00", "2026-01-01", Some("2026-06-01"), 5),
            grant("a-low", "30.00", "2026-01-01", Some("2026-06-01"), 1),
            grant("c-low", "30.00", "2026-01-01", Some("2026-06-01"), 1),
            grant("soon", "10.00", "2026-01-01", Some("2026-04-01"), 0),
            grant("gone", "99.00", "2026-01-01", Some("2026-03-01"), 99),
            grant("future", "99.00", "2026-04-01", None, 99),
        ];
        let order: Vec<&str> = draw_order(&grants, march)
            .iter()
            .map(|g| g.id.as_str())
            .collect();
        assert_eq!(order, ["soon", "b-high", "a-low", "c-low", "zz-late"]);
        let mut before = Drawn::new();
        before.insert("b-high".into(), d("25.00"));
        let draws = draw(&grants, march, &before, &d("50.00"));
        assert_eq!(
            draws,
            [
                ("soon".to_string(), d("10.00")),
                ("b-high".to_string(), d("5.00")),
                ("a-low".to_string(), d("30.00")),
                ("c-low".to_string(), d("5.00")),
            ]
        );
        assert!(draw(&grants, march, &before, &d("0.00")).is_empty());
        assert!(grants[4].lapses_after(march));
        assert!(!grants[0].lapses_after(march));
    }

    #[test]
    fn rows_carry_draws_and_redraws_both_ways() {
        let (sept, oct): (Period, Period) =
            ("2026-09".parse().unwrap(), "2026-10".parse().unwrap());
        let rows = credit_rows("acme", sept, &[("p".into(), d("40.00"))]);
        assert_eq!(rows[0][col::AMOUNT], "-40.00");
        assert_eq!(rows[0][col::ADJUSTS], "p");
        assert_eq!(own_draws(&rows).unwrap()["p"], d("40.00"));
        let frozen = own_draws(&rows).unwrap();
        let mut redrawn = Drawn::new();
        redrawn.insert("p".into(), d("55.00"));
        redrawn.insert("q".into(), d("1.50"));
        let adjustments = redraw_rows("acme", oct, sept, &frozen, &redrawn);
        let amounts: Vec<&str> = adjustments
            .iter()
            .map(|r| r[col::AMOUNT].as_str())
            .collect();
        assert_eq!(amounts, ["-15.00", "-1.50"]);
        assert_eq!(adjustments[0][col::DIMENSIONS], "grant=p");
        let moved = redraws(&adjustments).unwrap();
        assert_eq!(moved["p"], d("15.00"));
        assert_eq!(less_drawn(&redrawn, &moved)["p"], d("40.00"));
    }
}
