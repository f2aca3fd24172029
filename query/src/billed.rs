//! Invoices as billed: the text rows finance sends, draft or final
//! (docs/reference.md#final-invoices).
//!
//! A [`BilledInvoice`] is one tenant's invoice of one month as the rows of its
//! CSV ([`INVOICE_CSV_COLUMNS`]): its own usage lines (`kind = usage`), the
//! adjustment lines of late events of the month before (`kind = adjustment`,
//! `adjusts = M`), then the summary rows `subtotal`, `discount`, `adjustments`
//! (only when there are adjustment lines) and `total`, whose `metric` names them
//! and whose `kind` is empty. The rows are text all the way: a live invoice is
//! rendered into them once, a final one is read back from the `invoices` table
//! unchanged, so a final invoice is served byte for byte as it was closed.
//!
//! Adjustments ([`adjustment_rows`]): per (metric, rate line, segment, tier band), the
//! month recomputed with its recorded configuration minus its final usage
//! lines, one line without a metric for the difference of its discount and one
//! whose metric is `commitment_true_up` for the difference of its true-up, so
//! Σ adjustment amounts = total(recomputed) − total(final) to the cent. The
//! month's own discount and commitment apply to its own usage lines only.
//!
//! A tenant whose subtotal + discount falls short of its `minimum_monthly`
//! gets one more line, `kind = commitment_true_up`, with the shortfall.

use std::str::FromStr;

use allot_schemas::table_schema::INVOICE_CSV_COLUMNS;
use bigdecimal::{BigDecimal, Zero};

use crate::error::QueryError;
use crate::period::Period;
use crate::pricing::Invoice;
use crate::rounding::{MONEY_SCALE, QUANTITY_SCALE, format_fixed};

/// `kind` of a usage line.
pub const KIND_USAGE: &str = "usage";
/// `kind` of an adjustment line.
pub const KIND_ADJUSTMENT: &str = "adjustment";
/// `kind` of the commitment true-up line (and `metric` of its adjustment).
pub const KIND_TRUE_UP: &str = "commitment_true_up";

/// Index of a column in [`INVOICE_CSV_COLUMNS`].
pub mod col {
    /// `tenant_id`.
    pub const TENANT: usize = 0;
    /// `period`.
    pub const PERIOD: usize = 1;
    /// `metric` (or the summary row's label).
    pub const METRIC: usize = 2;
    /// `unit`.
    pub const UNIT: usize = 3;
    /// `segment_start`.
    pub const SEGMENT_START: usize = 4;
    /// `tier_to`.
    pub const TIER_TO: usize = 7;
    /// `quantity`.
    pub const QUANTITY: usize = 8;
    /// `unit_price`.
    pub const UNIT_PRICE: usize = 9;
    /// `amount`.
    pub const AMOUNT: usize = 10;
    /// `kind`.
    pub const KIND: usize = 11;
    /// `adjusts`.
    pub const ADJUSTS: usize = 12;
    /// `dimensions`.
    pub const DIMENSIONS: usize = 13;
}

/// Whether an invoice can still change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvoiceStatus {
    /// Computed now from the lake and the current configuration.
    Draft,
    /// Stored by a closing of the month.
    Final {
        /// The closing's revision (0, then one per restatement).
        revision: i32,
        /// When it was closed (RFC 3339).
        closed_at: String,
        /// The `usage_events` version the closing read.
        version: u64,
    },
}

/// One tenant's invoice of one month as CSV rows; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledInvoice {
    /// The tenant billed.
    pub tenant_id: String,
    /// The billing period, `YYYY-MM`.
    pub period: String,
    /// The currency of every amount.
    pub currency: String,
    /// The tenant's discount in percent, as configured.
    pub discount_percent: String,
    /// Every row, in [`INVOICE_CSV_COLUMNS`] order.
    pub rows: Vec<Vec<String>>,
    /// Draft or final.
    pub status: InvoiceStatus,
}

fn summary_row(tenant: &str, period: &str, label: &str, amount: &BigDecimal) -> Vec<String> {
    let mut row = vec![String::new(); INVOICE_CSV_COLUMNS.len()];
    row[col::TENANT] = tenant.to_string();
    row[col::PERIOD] = period.to_string();
    row[col::METRIC] = label.to_string();
    row[col::AMOUNT] = format_fixed(amount, MONEY_SCALE);
    row
}

fn parse_amount(text: &str) -> Result<BigDecimal, QueryError> {
    BigDecimal::from_str(text)
        .map_err(|_| QueryError::Stored(format!("stored amount {text:?} is not a decimal")))
}

impl BilledInvoice {
    /// A draft: `invoice`'s usage lines, then `adjustments` (rows made by
    /// [`adjustment_rows`]), then the summary rows; no credit drawn.
    pub fn draft(invoice: &Invoice, adjustments: Vec<Vec<String>>) -> BilledInvoice {
        BilledInvoice::draft_with_credits(invoice, Vec::new(), adjustments)
    }

    /// A draft: `invoice`'s usage lines and true-up, `credits` (its `credit`
    /// rows, [`crate::credits::credit_rows`]), `adjustments`, then the summary
    /// rows: `subtotal`, `discount`, `credits` and `adjustments` when there
    /// are such rows, and `total` = the invoice's total + credits + adjustments.
    pub fn draft_with_credits(
        invoice: &Invoice,
        credits: Vec<Vec<String>>,
        adjustments: Vec<Vec<String>>,
    ) -> BilledInvoice {
        let period = invoice.period.to_string();
        let mut rows: Vec<Vec<String>> = invoice
            .lines
            .iter()
            .map(|line| {
                let mut row = line.csv_record();
                row.push(KIND_USAGE.to_string());
                row.push(String::new());
                row.push(line.dimensions.clone());
                row
            })
            .collect();
        if !invoice.true_up.is_zero() {
            let mut row = vec![String::new(); INVOICE_CSV_COLUMNS.len()];
            row[col::TENANT] = invoice.tenant_id.clone();
            row[col::PERIOD] = period.clone();
            row[col::AMOUNT] = format_fixed(&invoice.true_up, MONEY_SCALE);
            row[col::KIND] = KIND_TRUE_UP.to_string();
            rows.push(row);
        }
        let sum = |rows: &[Vec<String>]| -> BigDecimal {
            rows.iter()
                .filter_map(|row| BigDecimal::from_str(&row[col::AMOUNT]).ok())
                .sum()
        };
        let credited = sum(&credits);
        let adjusted = sum(&adjustments);
        let (has_credits, has_adjustments) = (!credits.is_empty(), !adjustments.is_empty());
        rows.extend(credits);
        rows.extend(adjustments);
        let tenant = invoice.tenant_id.as_str();
        rows.push(summary_row(tenant, &period, "subtotal", &invoice.subtotal));
        rows.push(summary_row(tenant, &period, "discount", &invoice.discount));
        if has_credits {
            rows.push(summary_row(tenant, &period, "credits", &credited));
        }
        if has_adjustments {
            rows.push(summary_row(tenant, &period, "adjustments", &adjusted));
        }
        rows.push(summary_row(
            tenant,
            &period,
            "total",
            &(&invoice.total + &credited + &adjusted),
        ));
        BilledInvoice {
            tenant_id: invoice.tenant_id.clone(),
            period,
            currency: invoice.currency.clone(),
            discount_percent: invoice.discount_percent.to_plain_string(),
            rows,
            status: InvoiceStatus::Draft,
        }
    }

    /// The lines (usage, true-up, credit and adjustment), without the summary
    /// rows.
    pub fn lines(&self) -> impl Iterator<Item = &Vec<String>> {
        self.rows.iter().filter(|row| !row[col::KIND].is_empty())
    }

    /// The amount text of summary row `label` (`subtotal`, `discount`,
    /// `credits`, `adjustments`, `total`).
    pub fn summary(&self, label: &str) -> Option<&str> {
        self.rows
            .iter()
            .find(|row| row[col::KIND].is_empty() && row[col::METRIC] == label)
            .map(|row| row[col::AMOUNT].as_str())
    }

    /// The total as a decimal.
    pub fn total(&self) -> Result<BigDecimal, QueryError> {
        parse_amount(self.summary("total").unwrap_or("0"))
    }
}

/// The key of a line across recomputations: metric, unit, segment, tier band
/// and the rate line's dimensions.
fn line_key(row: &[String]) -> (&[String], &str) {
    (&row[col::METRIC..=col::TIER_TO], &row[col::DIMENSIONS])
}

/// The adjustment rows, on `tenant`'s invoice of `billed_in`, for the late
/// events of `adjusted`: `recomputed` (the month now, with its recorded
/// configuration) minus `final_invoice` (its newest final revision), per line key,
/// plus one discount-difference row. Either side may be missing (no usage).
pub fn adjustment_rows(
    tenant: &str,
    billed_in: Period,
    adjusted: Period,
    recomputed: Option<&Invoice>,
    final_invoice: Option<&BilledInvoice>,
) -> Result<Vec<Vec<String>>, QueryError> {
    let recomputed = recomputed.map(|invoice| BilledInvoice::draft(invoice, Vec::new()));
    let usage_lines = |invoice: Option<&BilledInvoice>| -> Vec<Vec<String>> {
        invoice
            .map(|i| {
                i.rows
                    .iter()
                    .filter(|row| row[col::KIND] == KIND_USAGE)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    let new_lines = usage_lines(recomputed.as_ref());
    let old_lines = usage_lines(final_invoice);
    let mut keys: Vec<(&[String], &str)> = Vec::new();
    for row in new_lines.iter().chain(&old_lines) {
        if !keys.contains(&line_key(row)) {
            keys.push(line_key(row));
        }
    }
    let find = |lines: &[Vec<String>], key: (&[String], &str)| -> Option<usize> {
        lines.iter().position(|row| line_key(row) == key)
    };
    let figure =
        |lines: &[Vec<String>], i: Option<usize>, c: usize| -> Result<BigDecimal, QueryError> {
            i.map_or(Ok(BigDecimal::zero()), |i| parse_amount(&lines[i][c]))
        };
    let mut rows = Vec::new();
    for key in keys {
        let (new, old) = (find(&new_lines, key), find(&old_lines, key));
        let quantity =
            figure(&new_lines, new, col::QUANTITY)? - figure(&old_lines, old, col::QUANTITY)?;
        let amount = figure(&new_lines, new, col::AMOUNT)? - figure(&old_lines, old, col::AMOUNT)?;
        if quantity.is_zero() && amount.is_zero() {
            continue;
        }
        let source = match new {
            Some(i) => &new_lines[i],
            None => &old_lines[old.expect("a key comes from one side")],
        };
        let mut row = source.clone();
        row[col::TENANT] = tenant.to_string();
        row[col::PERIOD] = billed_in.to_string();
        row[col::QUANTITY] = format_fixed(&quantity, QUANTITY_SCALE);
        row[col::AMOUNT] = format_fixed(&amount, MONEY_SCALE);
        row[col::KIND] = KIND_ADJUSTMENT.to_string();
        row[col::ADJUSTS] = adjusted.to_string();
        rows.push(row);
    }
    let discount = |invoice: Option<&BilledInvoice>| {
        invoice
            .and_then(|i| i.summary("discount"))
            .map_or(Ok(BigDecimal::zero()), parse_amount)
    };
    let true_up = |invoice: Option<&BilledInvoice>| {
        invoice
            .and_then(|i| i.rows.iter().find(|row| row[col::KIND] == KIND_TRUE_UP))
            .map_or(Ok(BigDecimal::zero()), |row| {
                parse_amount(&row[col::AMOUNT])
            })
    };
    let changes = [
        (
            "",
            discount(recomputed.as_ref())? - discount(final_invoice)?,
        ),
        (
            KIND_TRUE_UP,
            true_up(recomputed.as_ref())? - true_up(final_invoice)?,
        ),
    ];
    for (metric, change) in changes {
        if change.is_zero() {
            continue;
        }
        let mut row = vec![String::new(); INVOICE_CSV_COLUMNS.len()];
        row[col::TENANT] = tenant.to_string();
        row[col::PERIOD] = billed_in.to_string();
        row[col::METRIC] = metric.to_string();
        row[col::AMOUNT] = format_fixed(&change, MONEY_SCALE);
        row[col::KIND] = KIND_ADJUSTMENT.to_string();
        row[col::ADJUSTS] = adjusted.to_string();
        rows.push(row);
    }
    Ok(rows)
}

/// An invoice of a tenant without usage in its own month, only adjustments.
pub fn empty_invoice(
    tenant: &str,
    period: Period,
    currency: &str,
    discount: BigDecimal,
) -> Invoice {
    let zero = BigDecimal::zero().with_scale(MONEY_SCALE);
    Invoice {
        tenant_id: tenant.to_string(),
        period,
        currency: currency.to_string(),
        lines: Vec::new(),
        subtotal: zero.clone(),
        discount_percent: discount,
        discount: zero.clone(),
        true_up: zero.clone(),
        total: zero,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pricing::InvoiceLine;

    fn d(text: &str) -> BigDecimal {
        BigDecimal::from_str(text).unwrap()
    }

    fn invoice(period: Period, lines: &[(&str, &str, &str)], percent: &str) -> Invoice {
        let lines: Vec<InvoiceLine> = lines
            .iter()
            .map(|(metric, quantity, amount)| InvoiceLine {
                tenant_id: "acme".into(),
                period,
                metric: metric.to_string(),
                unit: "u".into(),
                segment_start: period.start_micros(),
                segment_end: period.end_micros(),
                tier_from: None,
                tier_to: None,
                quantity: d(quantity),
                unit_price: d("1"),
                amount: d(amount),
                dimensions: String::new(),
            })
            .collect();
        let subtotal: BigDecimal = lines.iter().map(|l| &l.amount).sum();
        let subtotal = subtotal.with_scale(2);
        let discount = crate::rounding::round_money(&(-(&subtotal * d(percent)) / d("100")));
        Invoice {
            tenant_id: "acme".into(),
            period,
            currency: "USD".into(),
            total: &subtotal + &discount,
            true_up: BigDecimal::zero(),
            lines,
            subtotal,
            discount_percent: d(percent),
            discount,
        }
    }

    #[test]
    fn adjustments_add_up_to_the_change_of_the_total() {
        let october: Period = "2026-10".parse().unwrap();
        let november = october.next();
        let old = invoice(october, &[("a", "1", "1.00"), ("b", "2", "2.00")], "10");
        let new = invoice(
            october,
            &[("a", "1", "1.00"), ("b", "3", "3.05"), ("c", "1", "0.10")],
            "10",
        );
        let final_invoice = BilledInvoice::draft(&old, Vec::new());
        let rows =
            adjustment_rows("acme", november, october, Some(&new), Some(&final_invoice)).unwrap();
        let metrics: Vec<&str> = rows.iter().map(|r| r[col::METRIC].as_str()).collect();
        assert_eq!(metrics, ["b", "c", ""]);
        let sum: BigDecimal = rows.iter().map(|r| d(&r[col::AMOUNT])).sum();
        assert_eq!(sum, &new.total - &old.total);
        assert!(rows.iter().all(|r| r[col::ADJUSTS] == "2026-10"));
        let own = invoice(november, &[("a", "1", "1.00")], "10");
        let billed = BilledInvoice::draft(&own, rows);
        assert_eq!(billed.summary("discount"), Some("-0.10"));
        assert_eq!(billed.summary("adjustments"), Some("1.03"));
        assert_eq!(billed.summary("total"), Some("1.93"));
    }

    mod property {
        use allot_schemas::config::Config;
        use chrono::NaiveDate;
        use proptest::prelude::*;

        use super::super::*;
        use super::d;
        use allot_schemas::gauge::{GaugeSample, GaugeSeries};

        use crate::pricing::{CounterDay, PriceBook, TenantUsage, invoice};

        const CONFIG: &str = r#"
[[rates]]
metric = "compute_seconds"
effective_from = "2026-01-01"
unit_price = "0.0400"

[[rates]]
metric = "compute_seconds"
effective_from = "2026-09-11"
unit_price = "0.0450"

[[rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
tiers = [{ up_to = "2", unit_price = "0.09" }, { up_to = "5", unit_price = "0.085" }, { unit_price = "0.07" }]

[[rates]]
metric = "storage_bytes"
effective_from = "2026-01-01"
unit_price = "0.023"

[tenants.acme]
discount_percent = "12.5"
minimum_monthly = "150.00"
"#;

        /// (metric index, day of September, raw value in thousandths, is late)
        fn events() -> impl Strategy<Value = Vec<(usize, u32, u64, bool)>> {
            prop::collection::vec(
                (0usize..3, 1u32..=30, 0u64..5_000_000_000, any::<bool>()),
                0..40,
            )
        }

        fn usage(events: &[(usize, u32, u64, bool)], with_late: bool) -> TenantUsage {
            let mut usage = TenantUsage {
                tenant_id: "acme".into(),
                ..TenantUsage::default()
            };
            let mut samples = Vec::new();
            for &(metric, day, value, late) in events {
                if late && !with_late {
                    continue;
                }
                let value = BigDecimal::new(value.into(), 3);
                let day = NaiveDate::from_ymd_opt(2026, 9, day).unwrap();
                match metric {
                    0 => usage.counters.push(CounterDay {
                        metric: "compute_seconds".into(),
                        day,
                        raw_sum: value,
                        dimensions: Vec::new(),
                    }),
                    1 => usage.counters.push(CounterDay {
                        metric: "egress_bytes".into(),
                        day,
                        raw_sum: value * BigDecimal::from(1_048_576),
                        dimensions: Vec::new(),
                    }),
                    _ => samples.push(GaugeSample {
                        ts_micros: allot_schemas::time::day_start_micros(day),
                        value: value * BigDecimal::from(1_048_576),
                    }),
                }
            }
            if !samples.is_empty() {
                usage.gauges.push(GaugeSeries {
                    metric: "storage_bytes".into(),
                    resource: None,
                    samples,
                    held: Vec::new(),
                });
            }
            usage
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(200))]
            #[test]
            fn final_plus_adjustments_is_the_recomputed_total(events in events()) {
                let config = Config::from_toml_str(CONFIG, "test", std::iter::empty::<(String, String)>()).unwrap();
                let (book, catalog) = (PriceBook::from_config(&config), config.catalog());
                let september: Period = "2026-09".parse().unwrap();
                let before = invoice(&book, &catalog, september, &usage(&events, false)).unwrap();
                let after = invoice(&book, &catalog, september, &usage(&events, true)).unwrap();
                let final_invoice = BilledInvoice::draft(&before, Vec::new());
                let rows = adjustment_rows("acme", september.next(), september, Some(&after), Some(&final_invoice)).unwrap();
                let adjusted: BigDecimal = rows.iter().map(|r| d(&r[col::AMOUNT])).sum();
                prop_assert_eq!(&final_invoice.total().unwrap() + &adjusted, after.total.clone());
                // On October's invoice, its total is its own plus the adjustments.
                let october = empty_invoice("acme", september.next(), "USD", d("12.5"));
                let billed = BilledInvoice::draft(&october, rows);
                prop_assert_eq!(billed.total().unwrap(), &after.total - &before.total);
            }
        }
    }
}
