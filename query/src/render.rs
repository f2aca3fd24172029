//! Reports as CSV and JSON, in one shape for the CLI and the HTTP API.
//!
//! CSV: a header row, then one row per record, fields quoted only when they hold
//! a comma, a quote or a line break (RFC 4180), `\n` line ends. JSON: decimals are
//! strings holding exactly the CSV text, so no figure passes through a binary
//! float on its way to a client.
//!
//! Invoice CSV (docs/reference.md#invoice-lines columns, then `kind` and `adjusts`): each
//! tenant's lines, then the rows whose `metric` is `subtotal`, `discount`,
//! `adjustments` (only with adjustment lines) and `total`, with the amount in
//! `amount` and every other column but `tenant_id` and `period` empty (see
//! [`crate::billed`]).

use allot_schemas::table_schema::{ALLOCATION_CSV_COLUMNS, INVOICE_CSV_COLUMNS};
use serde_json::{Map, Value, json};

use crate::allocation::AllocationRow;
use crate::billed::{BilledInvoice, InvoiceStatus};
use crate::health::TenantHealth;
use crate::noisy::{NOISY_COLUMNS, NoisyRow};
use crate::period::format_micros;
use crate::preview::{PREVIEW_COLUMNS, PREVIEW_LINE_COLUMNS, TenantPreview};
use crate::reports::{USAGE_COLUMNS, UsagePoint};
use crate::rounding::{MONEY_SCALE, format_fixed};

/// Rows of text under named columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportTable {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, each with one field per column.
    pub rows: Vec<Vec<String>>,
}

impl ReportTable {
    /// An empty table with `columns`.
    pub fn new<S: AsRef<str>>(columns: &[S]) -> ReportTable {
        ReportTable {
            columns: columns.iter().map(|c| c.as_ref().to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// The table as CSV text with a header row.
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for record in std::iter::once(&self.columns).chain(&self.rows) {
            let fields: Vec<String> = record.iter().map(|f| csv_field(f)).collect();
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        out
    }

    /// The table as a JSON array of objects keyed by column name.
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let object: Map<String, Value> = self
                        .columns
                        .iter()
                        .cloned()
                        .zip(row.iter().map(|f| Value::String(f.clone())))
                        .collect();
                    Value::Object(object)
                })
                .collect(),
        )
    }
}

/// One CSV field, quoted when it has to be.
///
/// Text a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return: a tenant's resource or label value can be
/// anything) is prefixed with a single quote, OWASP's advice against CSV
/// injection. A plain number such as `-12.50` is left as it is, so amounts
/// stay numbers.
pub fn csv_field(field: &str) -> String {
    let neutral;
    let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_plain_number(field) {
        neutral = format!("'{field}");
        neutral.as_str()
    } else {
        field
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// Whether `text` is a decimal number as reports print one: an optional sign,
/// digits, and an optional fraction (`-12.50`, `+3`, `0.000001`).
fn is_plain_number(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// A what-if preview: one row per tenant and month, or with `lines` one row per
/// item of each tenant's month then its total.
pub fn preview_table(previews: &[TenantPreview], lines: bool) -> ReportTable {
    if lines {
        let mut table = ReportTable::new(&PREVIEW_LINE_COLUMNS);
        for preview in previews {
            table.rows.extend(preview.line_records());
        }
        table
    } else {
        let mut table = ReportTable::new(&PREVIEW_COLUMNS);
        table
            .rows
            .extend(previews.iter().map(TenantPreview::csv_record));
        table
    }
}

/// Invoices as CSV rows: each invoice's rows (lines, then its summary rows).
pub fn invoices_table(invoices: &[BilledInvoice]) -> ReportTable {
    let mut table = ReportTable::new(&INVOICE_CSV_COLUMNS);
    for invoice in invoices {
        table.rows.extend(invoice.rows.iter().cloned());
    }
    table
}

/// One invoice as a JSON object: its status (`draft`, or `final` with the
/// revision, `closed_at` and the `usage_events` version), its lines (usage,
/// true-up, credit and adjustment) and its summary figures as strings.
pub fn invoice_json(invoice: &BilledInvoice) -> Value {
    let lines = ReportTable {
        columns: INVOICE_CSV_COLUMNS.iter().map(|c| c.to_string()).collect(),
        rows: invoice.lines().cloned().collect(),
    };
    let mut object = json!({
        "tenant_id": invoice.tenant_id,
        "period": invoice.period,
        "currency": invoice.currency,
        "status": "draft",
        "lines": lines.to_json(),
        "subtotal": invoice.summary("subtotal").unwrap_or("0.00"),
        "discount_percent": invoice.discount_percent,
        "discount": invoice.summary("discount").unwrap_or("0.00"),
        "total": invoice.summary("total").unwrap_or("0.00"),
    });
    if let Some(credits) = invoice.summary("credits") {
        object["credits"] = json!(credits);
    }
    if let Some(adjustments) = invoice.summary("adjustments") {
        object["adjustments"] = json!(adjustments);
    }
    if let InvoiceStatus::Final {
        revision,
        closed_at,
        version,
    } = &invoice.status
    {
        object["status"] = json!("final");
        object["revision"] = json!(revision);
        object["closed_at"] = json!(closed_at);
        object["version"] = json!(version);
    }
    object
}

/// A usage series as a table.
pub fn usage_table(points: &[UsagePoint]) -> ReportTable {
    ReportTable {
        columns: USAGE_COLUMNS.iter().map(|c| c.to_string()).collect(),
        rows: points.iter().map(UsagePoint::csv_record).collect(),
    }
}

/// Allocation rows as a table.
pub fn allocation_table(rows: &[AllocationRow]) -> ReportTable {
    ReportTable {
        columns: ALLOCATION_CSV_COLUMNS
            .iter()
            .map(|c| c.to_string())
            .collect(),
        rows: rows.iter().map(AllocationRow::csv_record).collect(),
    }
}

/// Noisy-neighbour rows: only the flagged ones in the columns of
/// docs/reference.md#noisy-neighbours, or (with
/// `all`) every row plus a `flagged` column.
pub fn noisy_table(rows: &[NoisyRow], all: bool) -> ReportTable {
    let mut columns: Vec<String> = NOISY_COLUMNS.iter().map(|c| c.to_string()).collect();
    if all {
        columns.push("flagged".to_string());
    }
    ReportTable {
        columns,
        rows: rows
            .iter()
            .filter(|r| all || r.flagged)
            .map(|r| {
                let mut record = r.csv_record();
                if all {
                    record.push(r.flagged.to_string());
                }
                record
            })
            .collect(),
    }
}

/// The columns of the health CSV.
pub const HEALTH_COLUMNS: [&str; 7] = [
    "tenant_id",
    "as_of",
    "status",
    "reasons",
    "mtd_cost",
    "forecast",
    "quota_use",
];

/// Health rows: reason codes joined by `;`, quota use as `metric:percent`.
pub fn health_table(report: &[TenantHealth]) -> ReportTable {
    ReportTable {
        columns: HEALTH_COLUMNS.iter().map(|c| c.to_string()).collect(),
        rows: report
            .iter()
            .map(|h| {
                vec![
                    h.tenant_id.clone(),
                    format_micros(h.as_of_micros),
                    h.status.to_string(),
                    h.reasons
                        .iter()
                        .map(|r| r.code)
                        .collect::<Vec<_>>()
                        .join(";"),
                    format_fixed(&h.mtd_cost, MONEY_SCALE),
                    h.forecast_text(),
                    h.quota_use
                        .iter()
                        .map(|q| format!("{}:{}", q.metric, format_fixed(&q.percent, MONEY_SCALE)))
                        .collect::<Vec<_>>()
                        .join(";"),
                ]
            })
            .collect(),
    }
}

/// One tenant's health as a JSON object with its reasons and quota use.
pub fn health_json(health: &TenantHealth, currency: &str) -> Value {
    json!({
        "tenant_id": health.tenant_id,
        "as_of": format_micros(health.as_of_micros),
        "status": health.status.to_string(),
        "reasons": health.reasons.iter().map(|r| json!({
            "code": r.code,
            "severity": r.severity.to_string(),
            "message": r.message,
        })).collect::<Vec<_>>(),
        "quota_use": health.quota_use.iter().map(|q| json!({
            "metric": q.metric,
            "used": q.used.to_plain_string(),
            "quota": q.quota.to_plain_string(),
            "percent": format_fixed(&q.percent, MONEY_SCALE),
        })).collect::<Vec<_>>(),
        "currency": currency,
        "mtd_cost": format_fixed(&health.mtd_cost, MONEY_SCALE),
        "forecast": health.forecast_text(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_json_carries_credit_lines_and_their_sum() {
        let row = |metric: &str, amount: &str, kind: &str, adjusts: &str| {
            let mut row = vec![String::new(); INVOICE_CSV_COLUMNS.len()];
            row[0] = "acme".into();
            row[1] = "2026-09".into();
            row[2] = metric.into();
            row[10] = amount.into();
            row[11] = kind.into();
            row[12] = adjusts.into();
            row
        };
        let invoice = BilledInvoice {
            tenant_id: "acme".into(),
            period: "2026-09".into(),
            currency: "USD".into(),
            discount_percent: "0".into(),
            rows: vec![
                row("api_calls", "150.00", "usage", ""),
                row("", "-100.00", "credit", "promo"),
                row("subtotal", "150.00", "", ""),
                row("discount", "0.00", "", ""),
                row("credits", "-100.00", "", ""),
                row("total", "50.00", "", ""),
            ],
            status: InvoiceStatus::Draft,
        };
        let object = invoice_json(&invoice);
        assert_eq!(object["credits"], "-100.00");
        assert_eq!(object["total"], "50.00");
        assert_eq!(object["lines"][1]["kind"], "credit");
        assert_eq!(object["lines"][1]["adjusts"], "promo");
        assert!(object.get("adjustments").is_none());
    }

    #[test]
    fn csv_quotes_only_when_needed() {
        let mut table = ReportTable::new(&["a", "b"]);
        table.rows.push(vec!["x,y".into(), "say \"hi\"".into()]);
        table.rows.push(vec!["plain".into(), String::new()]);
        assert_eq!(table.to_csv(), "a,b\n\"x,y\",\"say \"\"hi\"\"\"\nplain,\n");
        assert_eq!(
            table.to_json(),
            json!([{"a": "x,y", "b": "say \"hi\""}, {"a": "plain", "b": ""}])
        );
    }

    #[test]
    fn csv_neutralises_formulas_but_not_numbers() {
        for (field, written) in [
            (
                "=HYPERLINK(\"http://x\")",
                "\"'=HYPERLINK(\"\"http://x\"\")\"",
            ),
            ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1:A9)", "'@SUM(A1:A9)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "\"'\r=1\""),
            ("-", "'-"),
            ("-.5", "'-.5"),
            ("-12.50", "-12.50"),
            ("+3", "+3"),
            ("-0.000001", "-0.000001"),
            ("12.50", "12.50"),
            ("web-1", "web-1"),
            ("", ""),
        ] {
            assert_eq!(csv_field(field), written, "{field:?}");
        }
        // The JSON of the same table is the data as it is.
        let mut table = ReportTable::new(&["resource"]);
        table.rows.push(vec!["=1+1".into()]);
        assert_eq!(table.to_csv(), "resource\n'=1+1\n");
        assert_eq!(table.to_json(), json!([{"resource": "=1+1"}]));
    }
}
