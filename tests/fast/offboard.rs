//! Offboarding through the `allot` binary (docs/reference.md#compaction-and-offboarding):
//! `allot tenant export` writes the tenant's distinct events with exact values (ingested
//! into a new lake they give the same invoice), its rejected events and its invoices;
//! `allot tenant delete` refuses without `--confirm`, changes nothing in a dry run, and
//! then leaves no Parquet file anywhere under the lake, active or not, holding a row of the
//! tenant (but the audit row naming it), other tenants' figures unchanged.

use crate::common;

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Two tenants over a few September days, with awkward values, a copy re-sent
/// on another day, labels and a line rejected for each tenant.
fn events(part: usize) -> String {
    let lines: &[&str] = if part == 0 {
        &[
            r#"{"event_id":"a1","tenant_id":"acme","ts":"2026-09-01T03:00:00.123456Z","metric":"compute_seconds","value":3600,"region":"eu","labels":{"team":"x"}}"#,
            r#"{"event_id":"a2","tenant_id":"acme","ts":"2026-09-01T04:00:00Z","metric":"egress_bytes","value":1073741824.0000000025}"#,
            r#"{"event_id":"a3","tenant_id":"acme","ts":"2026-09-02T00:00:00Z","metric":"storage_bytes","value":5368709120,"resource":"vol-1"}"#,
            r#"{"event_id":"b1","tenant_id":"bravo","ts":"2026-09-01T07:00:00Z","metric":"compute_seconds","value":7200}"#,
            r#"{"event_id":"b2","tenant_id":"bravo","ts":"2026-09-02T09:00:00Z","metric":"egress_bytes","value":42.5}"#,
            r#"{"event_id":"a-bad","tenant_id":"acme","ts":"2026-09-01T03:00:00Z","metric":"no_such_metric","value":1}"#,
            r#"{"event_id":"b-bad","tenant_id":"bravo","ts":"2026-09-01T03:00:00Z","metric":"compute_seconds","value":-1}"#,
        ]
    } else {
        &[
            // a1 re-sent on another day: one event.
            r#"{"event_id":"a1","tenant_id":"acme","ts":"2026-09-03T03:00:00Z","metric":"compute_seconds","value":3600}"#,
            r#"{"event_id":"a4","tenant_id":"acme","ts":"2026-09-01T05:00:00Z","metric":"compute_seconds","value":0.000000003}"#,
            r#"{"event_id":"b3","tenant_id":"bravo","ts":"2026-09-01T08:00:00Z","metric":"compute_seconds","value":1.5e3}"#,
        ]
    };
    lines.join("\n") + "\n"
}

/// The test lake: both event files backfilled and compacted.
struct Lake(common::CliLake);

impl std::ops::Deref for Lake {
    type Target = common::CliLake;
    fn deref(&self) -> &common::CliLake {
        &self.0
    }
}

impl Lake {
    fn new() -> Lake {
        let lake = Lake(common::CliLake::new(common::FLAT_PRICE_BOOK));
        for part in 0..2 {
            let path = lake.dir.path().join(format!("events-{part}.jsonl"));
            std::fs::write(&path, events(part)).expect("write events");
            lake.ok(&[
                "ingest",
                "--no-progress",
                "--from-file",
                path.to_str().unwrap(),
            ]);
        }
        lake.ok(&["compact"]);
        lake
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "allot {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn invoice(&self, tenant: &str) -> String {
        self.ok(&[
            "invoice", "--month", "2026-09", "--tenant", tenant, "--format", "json",
        ])
    }
}

/// Every Parquet file under `dir`, recursively.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    common::files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

/// The values of a string column in a Parquet file (empty when it has none).
fn string_column(path: &Path, column: &str) -> Vec<Option<String>> {
    let file = std::fs::File::open(path).expect("open parquet");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut values = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let Some(found) = batch.column_by_name(column) else {
            continue;
        };
        let text = arrow::compute::cast(found, &arrow::datatypes::DataType::Utf8).expect("cast");
        let text = text.as_string::<i32>();
        values.extend((0..text.len()).map(|i| text.is_valid(i).then(|| text.value(i).to_string())));
    }
    values
}

/// Whether any Parquet file under `dir` (a partition path, or a `tenant_id`
/// column) holds `tenant`.
fn files_holding(dir: &Path, tenant: &str) -> Vec<PathBuf> {
    parquet_files(dir)
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains(&format!("tenant_id={tenant}"))
                || string_column(p, "tenant_id")
                    .iter()
                    .any(|t| t.as_deref() == Some(tenant))
        })
        .collect()
}

#[test]
fn export_gives_back_the_tenants_events_exactly() {
    let lake = Lake::new();
    lake.ok(&["close", "--month", "2026-09"]);
    let out = lake.dir.path().join("export");
    let said = lake.ok(&["tenant", "export", "acme", "--out", out.to_str().unwrap()]);
    assert!(
        said.starts_with("4 events, 1 rejected events and 1 monthly invoices of acme"),
        "{said}"
    );

    let events = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = events
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    // Ordered by ts; the copy of a1 re-sent on 09-03 is not an event.
    assert_eq!(ids, ["a1", "a2", "a4", "a3"]);
    // Exact values, as JSON numbers: the text is what was stored.
    assert!(
        events.contains(r#""value":1073741824.000000002}"#),
        "{events}"
    );
    assert!(events.contains(r#""value":0.000000003}"#), "{events}");
    assert!(
        events.contains(r#""ts":"2026-09-01T03:00:00.123456Z""#),
        "{events}"
    );
    assert_eq!(lines[0]["labels"]["team"], "x");
    assert_eq!(lines[0]["region"], "eu");
    assert_eq!(lines[3]["resource"], "vol-1");

    let rejected = std::fs::read_to_string(out.join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(rejected.contains("no_such_metric"), "{rejected}");

    let invoices = std::fs::read_to_string(out.join("invoices.csv")).unwrap();
    // One month, closed: its final invoice, as `allot invoice` prints it.
    assert_eq!(
        invoices,
        lake.ok(&["invoice", "--month", "2026-09", "--tenant", "acme"])
    );

    // The tenant recomputes the closed month's certificate digests from the
    // export alone, with the recipe of docs/reports-and-close.md ("Completeness
    // certificate").
    let certificate = lake.ok(&["certificate", "--month", "2026-09", "--tenant", "acme"]);
    let ours = common::certificate_digests(&certificate);
    let theirs = common::python_certificate_digests(&out.join("events.jsonl"), "2026-09");
    assert_eq!(ours.len(), 2, "{certificate}");
    assert_eq!(ours, theirs);

    // The export backfilled into a new lake bills the same.
    let copy = Lake(common::CliLake::new(common::FLAT_PRICE_BOOK));
    copy.ok(&[
        "ingest",
        "--no-progress",
        "--from-file",
        out.join("events.jsonl").to_str().unwrap(),
    ]);
    // (The copy's month is open: a draft with the final invoice's lines and total.)
    let figures = |text: String| {
        let invoice: serde_json::Value = serde_json::from_str(&text).unwrap();
        (invoice[0]["lines"].clone(), invoice[0]["total"].clone())
    };
    assert_eq!(figures(copy.invoice("acme")), figures(lake.invoice("acme")));

    let nowhere = lake.dir.path().join("nobody-export");
    let unknown = lake.run(&[
        "tenant",
        "export",
        "nobody",
        "--out",
        nowhere.to_str().unwrap(),
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        !nowhere.exists(),
        "an unknown tenant's export made its --out"
    );

    // A rerun replaces the files whole, leaving no temporary file behind.
    lake.ok(&["tenant", "export", "acme", "--out", out.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(out.join("events.jsonl")).unwrap(),
        events
    );
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["events.jsonl", "invoices.csv", "rejected.jsonl"]);
}

/// A tenant whose every event was rejected is known by its rejected rows, and
/// its export holds them.
#[test]
fn export_knows_a_tenant_by_its_rejected_events_alone() {
    let lake = common::CliLake::new(common::FLAT_PRICE_BOOK);
    let path = lake.dir.path().join("events.jsonl");
    std::fs::write(
        &path,
        [
            r#"{"event_id":"a1","tenant_id":"acme","ts":"2026-09-01T03:00:00Z","metric":"compute_seconds","value":1}"#,
            r#"{"event_id":"g1","tenant_id":"ghost","ts":"2026-09-01T03:00:00Z","metric":"no_such_metric","value":1}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    lake.ingest(&path);
    let out = lake.dir.path().join("ghost-export");
    let said = lake.run(&["tenant", "export", "ghost", "--out", out.to_str().unwrap()]);
    assert!(said.status.success(), "{said:?}");
    let said = String::from_utf8_lossy(&said.stdout);
    assert!(said.starts_with("0 events, 1 rejected events"), "{said}");
    let rejected = std::fs::read_to_string(out.join("rejected.jsonl")).unwrap();
    assert_eq!(rejected.lines().count(), 1, "{rejected}");
    assert!(rejected.contains("g1"), "{rejected}");
    assert_eq!(
        std::fs::read_to_string(out.join("events.jsonl")).unwrap(),
        ""
    );
}

/// A symbolic link planted where an export file goes is refused, never
/// followed: the file it points to keeps its contents.
#[cfg(unix)]
#[test]
fn export_refuses_a_symlink_in_its_directory() {
    let lake = Lake::new();
    let out = lake.dir.path().join("export");
    std::fs::create_dir_all(&out).unwrap();
    let victim = lake.dir.path().join("precious.txt");
    std::fs::write(&victim, "keep me").unwrap();
    for name in ["events.jsonl", "rejected.jsonl", "invoices.csv"] {
        let link = out.join(name);
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let refused = lake.run(&["tenant", "export", "acme", "--out", out.to_str().unwrap()]);
        assert_eq!(refused.status.code(), Some(2), "{name}: {refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("symbolic link"), "{name}: {stderr}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        std::fs::remove_file(&link).unwrap();
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert!(left.is_empty(), "{name}: {left:?}");
    }
}

#[test]
fn delete_erases_every_file_of_the_tenant_and_leaves_an_audit_row() {
    let lake = Lake::new();
    let bravo_before = lake.invoice("bravo");
    let bravo_sums =
        "SELECT tenant_id, metric, sum(value) AS v FROM usage_events GROUP BY 1, 2 ORDER BY 1, 2";
    let sums_before = lake.ok(&["sql", bravo_sums]);
    assert!(!files_holding(&lake.root(), "acme").is_empty());

    // Refused without the tenant named again.
    for confirm in [vec![], vec!["--confirm", "bravo"]] {
        let mut args = vec!["tenant", "delete", "acme"];
        args.extend(confirm);
        let out = lake.run(&args);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("--confirm acme") && err.lines().count() == 1,
            "{err}"
        );
    }

    // A dry run says what would go and changes nothing.
    let files_before = parquet_files(&lake.root());
    let said = lake.ok(&["tenant", "delete", "acme", "--dry-run"]);
    assert!(
        said.contains("usage_events: would remove 4 rows of acme"),
        "{said}"
    );
    assert!(
        said.contains("rejected_events: would remove 1 rows of acme"),
        "{said}"
    );
    assert!(said.contains("dry run: nothing was changed"), "{said}");
    assert_eq!(parquet_files(&lake.root()), files_before);

    let said = lake.ok(&[
        "tenant",
        "delete",
        "acme",
        "--confirm",
        "acme",
        "--by",
        "offboard-test",
    ]);
    assert!(said.contains("acme erased"), "{said}");
    assert!(
        said.contains("usage_events: removed 4 rows of acme"),
        "{said}"
    );

    // No file anywhere under the lake holds a row of acme, active or not, but
    // for the audit row that records the erasure.
    let audit = lake.root().join("audit");
    let left: Vec<PathBuf> = files_holding(&lake.root(), "acme")
        .into_iter()
        .filter(|p| !p.starts_with(&audit))
        .collect();
    assert_eq!(left, Vec::<PathBuf>::new());
    // Bravo's figures are unchanged; acme is gone.
    assert_eq!(lake.invoice("bravo"), bravo_before);
    let sums_after = lake.ok(&["sql", bravo_sums]);
    let bravo_lines = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with("bravo"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(bravo_lines(&sums_after), bravo_lines(&sums_before));
    assert!(!sums_after.contains("acme"), "{sums_after}");
    assert_eq!(
        lake.run(&["invoice", "--month", "2026-09", "--tenant", "acme"])
            .status
            .code(),
        Some(2)
    );
    // Compaction and reports still work on the lake.
    lake.ok(&["compact"]);
    assert_eq!(lake.invoice("bravo"), bravo_before);

    // The audit row.
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = parquet_files(&audit)
        .iter()
        .flat_map(|p| {
            let who = string_column(p, "who");
            let action = string_column(p, "action");
            let tenant = string_column(p, "tenant_id");
            (0..who.len())
                .map(|i| (who[i].clone(), action[i].clone(), tenant[i].clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    // Its intent, recorded first, and the finished erasure.
    let row = (
        Some("offboard-test".to_string()),
        Some("tenant_delete".to_string()),
        Some("acme".to_string()),
    );
    assert_eq!(rows, [row.clone(), row]);
    let details: Vec<serde_json::Value> = parquet_files(&audit)
        .iter()
        .flat_map(|p| string_column(p, "details"))
        .map(|d| serde_json::from_str(&d.unwrap()).unwrap())
        .collect();
    let started = details.iter().filter(|d| d["status"] == "started").count();
    assert_eq!(started, 1, "{details:?}");
    let details = details
        .iter()
        .find(|d| d["status"] == "finished")
        .expect("a finished erasure");
    assert_eq!(details["usage_events"]["rows"], 4);
    assert_eq!(details["rejected_events"]["rows"], 1);
}

/// A month closed before the erasure still verifies, without the erased tenant.
#[test]
fn a_closed_month_verifies_without_the_erased_tenant() {
    let lake = Lake::new();
    let out = lake.run(&["close", "--month", "2026-09"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(lake.ok(&["verify", "--month", "2026-09"]), "verified\n");
    lake.ok(&["tenant", "delete", "acme", "--confirm", "acme"]);
    assert_eq!(
        lake.ok(&["verify", "--month", "2026-09"]),
        "verified, but for acme (erased since the close: not compared, nor the allocation)\n"
    );
    // The stored final invoice of bravo is still what it was.
    assert!(lake.invoice("bravo").contains("\"final\""));
}

#[test]
fn vacuum_takes_a_retention_and_refuses_a_bad_one() {
    let lake = Lake::new();
    let said = lake.ok(&["vacuum", "--retention", "0d"]);
    assert!(said.contains("files deleted"), "{said}");
    let out = lake.run(&["vacuum", "--retention", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--retention soon"));
}
