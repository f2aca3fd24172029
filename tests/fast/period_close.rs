//! End-to-end tests of period close (docs/reference.md#period-close) through the `allot`
//! binary: the certificate digest recomputed independently in Python from the input file,
//! and `allot verify` failing on a removed data file, a tampered closing and a data file
//! that lost a row, and passing after compaction.

use crate::common;

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, StringArray};

/// The test price book, with acme's egress in tiers and a discount, so that a
/// closing holds tier lines and a discount besides flat usage lines.
fn config() -> String {
    common::price_book_with(
        r#"
[tenants.acme]
discount_percent = "12.5"

[[tenants.acme.rates]]
metric = "egress_bytes"
effective_from = "2026-01-01"
tiers = [{ up_to = "1", unit_price = "0.09" }, { unit_price = "0.05" }]
"#,
    )
}

/// Events of September 2026 with awkward values (exponents, a tie past nine
/// decimals), an in-file duplicate, and a few events outside the month.
fn events() -> String {
    let mut lines = Vec::new();
    for (i, (tenant, day, hour, metric, value)) in [
        ("acme", 1, 3, "compute_seconds", "3600"),
        ("acme", 1, 4, "compute_seconds", "1.5e3"),
        ("acme", 1, 5, "egress_bytes", "1073741824.0000000025"),
        ("acme", 2, 0, "storage_bytes", "5368709120"),
        ("acme", 2, 9, "compute_seconds", "0.0000000035"),
        ("bravo", 1, 7, "compute_seconds", "7200"),
        ("bravo", 30, 23, "egress_bytes", "42"),
        ("bravo", 12, 1, "compute_seconds", "10"),
    ]
    .iter()
    .enumerate()
    {
        lines.push(format!(
            r#"{{"event_id":"e{i}","tenant_id":"{tenant}","ts":"2026-09-{day:02}T{hour:02}:17:05.123456Z","metric":"{metric}","value":{value}}}"#
        ));
    }
    // The same id again on the same day: one event.
    lines.push(
        r#"{"event_id":"e0","tenant_id":"acme","ts":"2026-09-01T03:17:05.123456Z","metric":"compute_seconds","value":3600}"#
            .to_string(),
    );
    lines.push(
        r#"{"event_id":"x1","tenant_id":"acme","ts":"2026-10-01T00:00:00Z","metric":"compute_seconds","value":60}"#
            .to_string(),
    );
    lines.join("\n") + "\n"
}

/// The test lake, with the month's events backfilled.
struct Lake(common::CliLake);

impl std::ops::Deref for Lake {
    type Target = common::CliLake;
    fn deref(&self) -> &common::CliLake {
        &self.0
    }
}

impl Lake {
    /// A fresh lake with the events ingested (as `files` separate backfills).
    fn new(files: usize) -> Lake {
        let lake = Lake(common::CliLake::new(&config()));
        let all = events();
        let lines: Vec<&str> = all.lines().collect();
        let per_file = lines.len().div_ceil(files);
        for (i, chunk) in lines.chunks(per_file).enumerate() {
            let path = lake.dir.path().join(format!("events-{i}.jsonl"));
            std::fs::write(&path, chunk.join("\n") + "\n").expect("write events");
            lake.ingest(&path);
        }
        std::fs::write(lake.dir.path().join("events.jsonl"), all).expect("write events");
        lake
    }

    fn close(&self) {
        let out = self.run(&["close", "--month", "2026-09"]);
        assert!(out.status.success(), "close: {}", stderr(&out));
    }

    fn verify(&self) -> Output {
        self.run(&["verify", "--month", "2026-09"])
    }

    /// The data files of a table, sorted.
    fn data_files(&self, table: &str) -> Vec<PathBuf> {
        common::data_files(&self.root().join(table))
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn certificate_digests_match_an_independent_python_recomputation() {
    let lake = Lake::new(1);
    lake.close();
    let out = lake.run(&["certificate", "--month", "2026-09"]);
    assert!(out.status.success(), "certificate: {}", stderr(&out));
    let ours = common::certificate_digests(&stdout(&out));
    let theirs =
        common::python_certificate_digests(&lake.dir.path().join("events.jsonl"), "2026-09");
    assert_eq!(ours.len(), 5, "tenant-days: {ours:?}");
    assert_eq!(ours, theirs);
}

#[test]
fn verify_passes_on_a_closed_month_and_after_compaction() {
    let lake = Lake::new(3);
    lake.close();
    let out = lake.verify();
    assert!(out.status.success(), "verify: {}", stderr(&out));
    assert_eq!(stdout(&out), "verified\n");
    let compact = lake.run(&["compact"]);
    assert!(compact.status.success(), "compact: {}", stderr(&compact));
    let out = lake.verify();
    assert!(
        out.status.success(),
        "verify after compaction: {}",
        stderr(&out)
    );
    // Final means final: the stored invoice survives compaction byte for byte.
    let before = lake.run(&["invoice", "--month", "2026-09", "--format", "json"]);
    assert!(
        stdout(&before).contains("\"status\": \"final\""),
        "{}",
        stdout(&before)
    );
}

#[test]
fn verify_fails_when_a_data_file_is_gone() {
    let lake = Lake::new(1);
    lake.close();
    let files = lake.data_files("usage_events");
    std::fs::remove_file(&files[0]).expect("remove a data file");
    let out = lake.verify();
    assert_eq!(out.status.code(), Some(1), "stdout {}", stdout(&out));
    assert!(
        stderr(&out).contains("2026-09 revision 0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_fails_when_the_closing_row_was_tampered_with() {
    let lake = Lake::new(1);
    lake.close();
    let files = lake.data_files("closings");
    assert_eq!(files.len(), 1);
    let batches: Vec<RecordBatch> = common::read_parquet(&files[0])
        .into_iter()
        .map(|batch| {
            let schema = batch.schema();
            let i = schema.index_of("config_text").expect("config_text");
            let tampered: StringArray = batch
                .column(i)
                .as_string::<i32>()
                .iter()
                .map(|text| text.map(|t| t.replace("0.0400", "0.0300")))
                .collect();
            let mut columns = batch.columns().to_vec();
            columns[i] = Arc::new(tampered);
            RecordBatch::try_new(schema, columns).expect("batch")
        })
        .collect();
    common::write_parquet(&files[0], &batches);
    let out = lake.verify();
    assert_eq!(out.status.code(), Some(1), "stdout {}", stdout(&out));
    assert!(
        stderr(&out).contains("configuration text does not match"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn verify_fails_when_a_data_file_lost_a_row() {
    let lake = Lake::new(1);
    lake.close();
    // A "compaction" that rewrote acme's 2026-09-01 file without one row.
    let file = lake
        .data_files("usage_events")
        .into_iter()
        .find(|p| {
            p.to_string_lossy()
                .contains("tenant_id=acme/day=2026-09-01")
        })
        .expect("acme's first day");
    let batches = common::read_parquet(&file);
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert!(total >= 2);
    let mut kept: Vec<RecordBatch> = Vec::new();
    let mut dropped = false;
    for batch in batches {
        if !dropped && batch.num_rows() > 0 {
            kept.push(batch.slice(1, batch.num_rows() - 1));
            dropped = true;
        } else {
            kept.push(batch);
        }
    }
    common::write_parquet(&file, &kept);
    let out = lake.verify();
    assert_eq!(out.status.code(), Some(1), "stdout {}", stdout(&out));
    // Named either as the tenant's figures that changed or as its tenant-day's
    // file that no longer matches what the log recorded (its size).
    let err = stderr(&out);
    assert!(
        err.contains("tenant acme") || err.contains("tenant_id=acme/day=2026-09-01"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn verify_passes_after_compaction_and_vacuum_within_close_retention() {
    let lake = Lake::new(3);
    lake.close();
    let compact = lake.run(&["compact"]);
    assert!(compact.status.success(), "compact: {}", stderr(&compact));
    let files_before = lake.data_files("usage_events").len();
    // Vacuum everything removed, at once, except what the closing needs.
    std::fs::write(
        lake.config(),
        format!("{}\n[ingest]\nvacuum_retention = \"0s\"\n", config()),
    )
    .expect("config");
    let vacuum = lake.run(&["vacuum"]);
    assert!(vacuum.status.success(), "vacuum: {}", stderr(&vacuum));
    assert_eq!(
        lake.data_files("usage_events").len(),
        files_before,
        "{}",
        stdout(&vacuum)
    );
    let out = lake.verify();
    assert!(
        out.status.success(),
        "verify after vacuum: {}",
        stderr(&out)
    );
    // Without the closing's protection the same vacuum deletes the old files.
    std::fs::write(
        lake.config(),
        format!(
            "{}\n[ingest]\nvacuum_retention = \"0s\"\nclose_retention = \"0s\"\n",
            config()
        ),
    )
    .expect("config");
    let vacuum = lake.run(&["vacuum"]);
    assert!(vacuum.status.success(), "vacuum: {}", stderr(&vacuum));
    assert!(
        lake.data_files("usage_events").len() < files_before,
        "{}",
        stdout(&vacuum)
    );
    assert_eq!(lake.verify().status.code(), Some(1));
}

/// The SQL tables beside `usage_events` (docs/reference.md#sql-tables): a
/// tenant's `invoices` are its final invoices' rows alone, their `total`
/// equal to `allot invoice`'s to the cent; `closings` lists the close without
/// what it froze for every tenant; `usage_monthly` and `usage_hourly` add up
/// to `usage_events`.
#[test]
fn sql_tables_serve_closed_invoices_and_usage_sums_per_tenant() {
    let lake = Lake::new(1);
    lake.close();
    let sql = |tenant: &str, query: &str| -> String {
        let out = lake.run(&["sql", "--tenant", tenant, query]);
        assert!(out.status.success(), "{query}: {}", stderr(&out));
        stdout(&out)
    };
    let invoice = lake.run(&["invoice", "--month", "2026-09", "--tenant", "acme"]);
    assert!(invoice.status.success(), "{}", stderr(&invoice));
    let invoice = stdout(&invoice);
    let total_line = invoice
        .lines()
        .find(|line| line.split(',').nth(2) == Some("total"))
        .unwrap_or_else(|| panic!("a total row: {invoice}"));
    let total: Vec<&str> = total_line.split(',').collect();
    let amount = total[10];

    let stored = sql(
        "acme",
        "SELECT tenant_id, revision, amount FROM invoices WHERE metric = 'total' AND month = '2026-09'",
    );
    let rows: Vec<&str> = stored.lines().skip(1).collect();
    assert_eq!(rows.len(), 1, "{stored}");
    let fields: Vec<&str> = rows[0].split(',').collect();
    assert_eq!(fields[..2], ["acme", "0"], "{stored}");
    // The decimal's trailing zeros aside, the same amount.
    let trimmed = |text: &str| {
        let text = text.trim_end_matches('0');
        text.trim_end_matches('.').to_string()
    };
    assert_eq!(trimmed(fields[2]), trimmed(amount), "{stored} vs {invoice}");
    assert_eq!(
        sql("acme", "SELECT DISTINCT tenant_id FROM invoices"),
        "tenant_id\nacme\n"
    );
    assert_eq!(
        sql("bravo", "SELECT DISTINCT tenant_id FROM invoices"),
        "tenant_id\nbravo\n"
    );
    assert_eq!(
        sql("acme", "SELECT month, revision FROM closings"),
        "month,revision\n2026-09,0\n"
    );
    let frozen = lake.run(&[
        "sql",
        "--tenant",
        "acme",
        "SELECT config_text FROM closings",
    ]);
    assert!(!frozen.status.success(), "{}", stdout(&frozen));

    let monthly = sql(
        "acme",
        "SELECT metric, events, value_sum FROM usage_monthly \
         WHERE month = TIMESTAMP '2026-09-01 00:00:00' ORDER BY metric",
    );
    let direct = sql(
        "acme",
        "SELECT metric, count(*) AS events, sum(value) AS value_sum FROM usage_events \
         WHERE ts >= TIMESTAMP '2026-09-01 00:00:00' AND ts < TIMESTAMP '2026-10-01 00:00:00' \
         GROUP BY metric ORDER BY metric",
    );
    assert_eq!(monthly, direct);
    assert_eq!(monthly.lines().count(), 4, "{monthly}");
    let hourly = sql(
        "acme",
        "SELECT metric, sum(events) AS events, sum(value_sum) AS value_sum FROM usage_hourly \
         WHERE hour >= TIMESTAMP '2026-09-01 00:00:00' AND hour < TIMESTAMP '2026-10-01 00:00:00' \
         GROUP BY metric ORDER BY metric",
    );
    assert_eq!(hourly, direct);
}

/// Turns the lake's `invoices` table into one written before the `dimensions`
/// column existed.
fn drop_invoice_dimensions(lake: &Lake) {
    common::drop_columns(&lake.root().join("invoices"), &["dimensions"]);
}

#[test]
fn a_lake_closed_before_invoice_dimensions_still_reads_closes_and_verifies() {
    let lake = Lake::new(1);
    lake.close();
    let invoice = |month: &str| {
        let out = lake.run(&["invoice", "--month", month]);
        assert!(out.status.success(), "invoice {month}: {}", stderr(&out));
        stdout(&out)
    };
    let september = invoice("2026-09");
    drop_invoice_dimensions(&lake);
    assert!(
        common::read_parquet(&lake.data_files("invoices")[0])[0]
            .column_by_name("dimensions")
            .is_none()
    );
    // The old final invoice renders as it did.
    assert_eq!(invoice("2026-09"), september);
    // The next month closes onto the old table, which gains the column.
    let out = lake.run(&["close", "--month", "2026-10"]);
    assert!(out.status.success(), "close 2026-10: {}", stderr(&out));
    let october = invoice("2026-10");
    assert!(october.contains("\nacme,2026-10,total,"), "{october}");
    // A restatement of the old month appends too.
    let out = lake.run(&[
        "close",
        "--month",
        "2026-09",
        "--restate",
        "--reason",
        "recheck",
    ]);
    assert!(out.status.success(), "restate 2026-09: {}", stderr(&out));
    let out = lake.run(&["invoice", "--month", "2026-09", "--revision", "0"]);
    assert!(out.status.success(), "revision 0: {}", stderr(&out));
    assert_eq!(stdout(&out), september);
    for month in ["2026-09", "2026-10"] {
        let out = lake.run(&["verify", "--month", month]);
        assert!(out.status.success(), "verify {month}: {}", stderr(&out));
    }
    // SQL's invoices table reads the old rows' missing dimensions as empty,
    // as the new rows store them.
    let sql = |query: &str| {
        let out = lake.run(&["sql", query]);
        assert!(out.status.success(), "{query}: {}", stderr(&out));
        stdout(&out)
    };
    assert_ne!(
        sql("SELECT count(*) AS n FROM invoices WHERE month = '2026-09' AND revision = 0"),
        "n\n0\n"
    );
    assert_eq!(
        sql("SELECT count(*) AS n FROM invoices WHERE dimensions IS NULL"),
        "n\n0\n"
    );
}

/// Seventeen tenants with grants, one more than the credit ledger walks one by
/// one: the balances of the all-tenant walk (every tenant's months at once)
/// and of each tenant's own walk must be the same, before and after a close,
/// for invoices and credit statements alike.
#[test]
fn credit_balances_are_the_same_walked_together_or_tenant_by_tenant() {
    let tenants: Vec<String> = (0..17).map(|i| format!("c{i:02}")).collect();
    let mut config = String::from(
        "currency = \"USD\"\n\
         [[rates]]\nmetric = \"compute_seconds\"\neffective_from = \"2026-01-01\"\nunit_price = \"0.0400\"\n\
         [[rates]]\nmetric = \"egress_bytes\"\neffective_from = \"2026-01-01\"\nunit_price = \"0.05\"\n\
         [[rates]]\nmetric = \"storage_bytes\"\neffective_from = \"2026-01-01\"\nunit_price = \"0.023\"\n",
    );
    let mut rng = common::Lcg(17);
    let mut events = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        config.push_str(&format!(
            "[[tenants.{tenant}.credits]]\nid = \"g\"\namount = \"0.{:02}\"\neffective_from = \"2026-07-20\"\n",
            10 + i * 3
        ));
        for (month, day) in [(7, 25), (8, 3), (8, 17), (9, 9)] {
            events.push(common::synthetic_event(
                &mut rng,
                tenant,
                month,
                day,
                events.len(),
            ));
        }
    }
    let lake = common::CliLake::new(&config);
    let path = lake.dir.path().join("events.jsonl");
    std::fs::write(&path, events.join("\n") + "\n").unwrap();
    lake.ingest(&path);
    let header_and_rows = |args: &[&str]| -> (String, Vec<String>) {
        let text = stdout(&lake.run(args));
        let mut lines = text.lines().map(str::to_string);
        (lines.next().unwrap_or_default(), lines.collect())
    };
    // Every tenant walked at once, then a few of them (first, middle, last)
    // each on its own: their rows must agree.
    let same_both_ways = |command: &str, month: &str| {
        let (header, together) = header_and_rows(&[command, "--month", month]);
        for tenant in [&tenants[0], &tenants[8], &tenants[16]] {
            let (own_header, rows) =
                header_and_rows(&[command, "--month", month, "--tenant", tenant]);
            assert_eq!(own_header, header);
            let theirs: Vec<String> = together
                .iter()
                .filter(|r| r.starts_with(&format!("{tenant},")))
                .cloned()
                .collect();
            assert_eq!(theirs, rows, "{command} {month} {tenant}");
        }
        together
    };
    let invoices = same_both_ways("invoice", "2026-09");
    assert!(
        invoices.iter().filter(|r| r.contains(",credit,g,")).count() >= 5,
        "the grants are drawn: {invoices:?}"
    );
    same_both_ways("credits", "2026-08");
    stdout(&lake.run(&["close", "--month", "2026-07"]));
    stdout(&lake.run(&["close", "--month", "2026-08"]));
    assert_eq!(
        same_both_ways("invoice", "2026-09"),
        invoices,
        "closing changes no draw"
    );
    assert_eq!(
        stdout(&lake.run(&["verify", "--month", "2026-08"])).trim(),
        "verified"
    );
}
