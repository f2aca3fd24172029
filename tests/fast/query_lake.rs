//! The query engine on a lake written by `allot ingest`: DuckDB, reading the
//! table's active Parquet files on its own, finds the same counter quantities as
//! allot's invoices to the last digit; a duplicated data file changes no figure;
//! tenant-scoped SQL sees only its tenant; every sandbox escape is refused with
//! a clean one-line error.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deltalake::kernel::transaction::CommitBuilder;
use deltalake::kernel::{Action, Add};
use deltalake::protocol::{DeltaOperation, SaveMode};

const TENANTS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];

const CONFIG: &str = common::FLAT_PRICE_BOOK;

fn allot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_allot"))
}

/// Writes two event files (February and March 2026, four tenants, decimal values
/// with up to 9 fractional digits) and returns their paths.
fn write_events(dir: &Path) -> Vec<PathBuf> {
    let mut rng = common::Lcg(42);
    let mut files = Vec::new();
    for (part, days) in [(1, 1..=28), (2, 1..=31)] {
        let month = if part == 1 { 2 } else { 3 };
        let mut lines = String::new();
        for day in days {
            for (t, tenant) in TENANTS.iter().enumerate() {
                for i in 0..(3 + t) {
                    lines.push_str(&common::synthetic_event(&mut rng, tenant, month, day, i));
                    lines.push('\n');
                }
            }
        }
        let path = dir.join(format!("events-{part}.jsonl"));
        std::fs::write(&path, lines).expect("write events");
        files.push(path);
    }
    files
}

struct Lake {
    _dir: tempfile::TempDir,
    lake: PathBuf,
    config: PathBuf,
}

fn build_lake() -> Lake {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = dir.path().join("lake");
    let config = dir.path().join("allot.toml");
    std::fs::write(&config, CONFIG).expect("write config");
    for events in write_events(dir.path()) {
        common::ingest_into(&lake, &events);
    }
    Lake {
        _dir: dir,
        lake,
        config,
    }
}

impl Lake {
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = allot();
        command
            .args(args)
            .arg("--lake")
            .arg(&self.lake)
            .arg("--config")
            .arg(&self.config);
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run allot")
    }

    fn stdout(&self, args: &[&str]) -> String {
        let output = self.run(args, &[]);
        assert!(
            output.status.success(),
            "allot {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    /// Counter quantities of the March invoice lines: `tenant,metric,quantity`.
    fn invoice_counter_quantities(&self) -> BTreeSet<String> {
        self.stdout(&["invoice", "--month", "2026-03"])
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                ["compute_seconds", "egress_bytes"]
                    .contains(&fields[2])
                    .then(|| format!("{},{},{}", fields[0], fields[2], fields[8]))
            })
            .collect()
    }

    fn duckdb_counter_quantities(&self) -> BTreeSet<String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/query_check.py");
        let output = Command::new(common::test_python())
            .arg(script)
            .arg(&self.lake)
            .arg("2026-03")
            .output()
            .expect("run query_check.py");
        assert!(
            output.status.success(),
            "query_check.py: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("utf-8")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Adds a second copy of one data file of `tenant`'s partition `day` to the
    /// table, as two collectors racing on the same events would.
    async fn duplicate_partition_file(&self, tenant: &str, day: &str) {
        let url = url::Url::from_directory_path(self.lake.join("usage_events")).unwrap();
        let mut table = deltalake::open_table(url).await.expect("open table");
        let snapshot = table.snapshot().expect("snapshot");
        let original = snapshot
            .log_data()
            .iter()
            .find(|f| {
                let values = f.partition_values_map();
                values.get("tenant_id").cloned().flatten().as_deref() == Some(tenant)
                    && values.get("day").cloned().flatten().as_deref() == Some(day)
            })
            .expect("partition file");
        let source = self
            .lake
            .join("usage_events")
            .join(original.path().as_ref());
        let copy_name = format!("tenant_id={tenant}/day={day}/copy-of-a-racing-writer.parquet");
        let target = self.lake.join("usage_events").join(&copy_name);
        std::fs::copy(&source, &target).expect("copy data file");
        let add = Add {
            path: copy_name,
            size: original.size(),
            partition_values: original.partition_values_map().into_iter().collect(),
            modification_time: original.modification_time(),
            data_change: true,
            ..Default::default()
        };
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(vec!["tenant_id".into(), "day".into()]),
            predicate: None,
        };
        CommitBuilder::default()
            .with_actions(vec![Action::Add(add)])
            .build(Some(snapshot), table.log_store(), operation)
            .await
            .expect("commit the copy");
        table.load().await.expect("reload");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn duckdb_agrees_and_a_duplicated_file_changes_no_figure() {
    let lake = build_lake();
    let from_allot = lake.invoice_counter_quantities();
    let from_duckdb = lake.duckdb_counter_quantities();
    assert_eq!(from_allot.len(), TENANTS.len() * 2, "{from_allot:?}");
    assert_eq!(from_allot, from_duckdb);

    let invoice_before = lake.stdout(&["invoice", "--month", "2026-03"]);
    let count_sql = "SELECT count(*) AS events, sum(value) AS total FROM usage_events";
    let count_before = lake.stdout(&["sql", count_sql]);
    // Each partition had one file; now two of them hold every event twice.
    lake.duplicate_partition_file("bravo", "2026-03-05").await;
    lake.duplicate_partition_file("delta", "2026-03-31").await;

    assert_eq!(
        lake.stdout(&["invoice", "--month", "2026-03"]),
        invoice_before
    );
    assert_eq!(lake.stdout(&["sql", count_sql]), count_before);
    assert_eq!(lake.duckdb_counter_quantities(), from_duckdb);
    // bravo sends 4 events a day; the 8 rows of the partition count as 4.
    let raw = lake.stdout(&[
        "sql",
        "SELECT count(*) FROM usage_events WHERE tenant_id = 'bravo' AND day = DATE '2026-03-05'",
    ]);
    assert_eq!(raw.lines().nth(1), Some("4"), "{raw}");
    let files = std::fs::read_dir(
        lake.lake
            .join("usage_events/tenant_id=bravo/day=2026-03-05"),
    )
    .expect("partition dir")
    .count();
    assert_eq!(files, 2);
}

/// Events ingested after `allot compact` built the rollups are billed. A late
/// backfill that brings a tenant one partition leaves that partition with two
/// files read as they are, the compacted one and its own, and the partition's
/// rollups must stop counting as current whichever of the two paths sorts
/// first. Eight such backfills bring each of the four tenants one late file each,
/// so a basis that misses either file fails here on every run.
#[test]
fn events_ingested_after_compaction_are_billed() {
    let lake = build_lake();
    let days: Vec<u32> = (3..=24).step_by(3).collect();
    // One event of each tenant on each of `days`, in one file.
    let ingest_days = |name: &str, days: &[u32]| {
        let mut lines = String::new();
        for tenant in TENANTS {
            for day in days {
                lines.push_str(&format!(
                    "{{\"event_id\":\"{name}-{tenant}-{day}\",\"tenant_id\":\"{tenant}\",\"ts\":\"2026-03-{day:02}T10:30:00Z\",\"metric\":\"compute_seconds\",\"value\":36000000,\"resource\":\"r1\"}}\n"
                ));
            }
        }
        let path = lake._dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&path, lines).expect("write events");
        common::ingest_into(&lake.lake, &path);
    };
    // A second file in those 32 partitions, so that compaction rewrites them into
    // one file each, checked against the whole table.
    ingest_days("early", &days);
    let compact = lake.run(&["compact"], &[]);
    assert!(compact.status.success(), "{compact:?}");
    let invoice_before = lake.stdout(&["invoice", "--month", "2026-03"]);
    assert_eq!(
        lake.invoice_counter_quantities(),
        lake.duckdb_counter_quantities()
    );

    for day in &days {
        ingest_days(&format!("late-{day}"), &[*day]);
    }

    // The rollups still current are those of the partitions without late files,
    // and every one of them gives what its raw events give.
    let verified = lake.stdout(&["verify", "--rollups", "--sample", "0"]);
    let current: u64 = verified
        .split(" of ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{verified}"));
    assert_eq!(current, (28 + 31 - 8) * TENANTS.len() as u64, "{verified}");
    // DuckDB sums the active files, the late ones included.
    let from_allot = lake.invoice_counter_quantities();
    assert_eq!(from_allot, lake.duckdb_counter_quantities());
    assert_ne!(
        lake.stdout(&["invoice", "--month", "2026-03"]),
        invoice_before
    );
    // Compacting again folds the late files in and refreshes the rollups.
    let compact = lake.run(&["compact"], &[]);
    assert!(compact.status.success(), "{compact:?}");
    assert_eq!(lake.invoice_counter_quantities(), from_allot);
    let verified = lake.stdout(&["verify", "--rollups", "--sample", "0"]);
    assert!(verified.starts_with("verified: 236 of 236 "), "{verified}");
}

/// Ingests `lines` as one file per chunk into a fresh lake and returns the March
/// invoice and the all-tenant health as of the end of March.
/// With `compact_after = Some(k)`, `allot compact` (which also builds the
/// rollups) runs after the `k`-th chunk, so the later chunks land beside
/// compacted files and current rollups.
fn reports_of_chunks(chunks: &[Vec<String>], compact_after: Option<usize>) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let lake = Lake {
        lake: dir.path().join("lake"),
        config: dir.path().join("allot.toml"),
        _dir: dir,
    };
    std::fs::write(&lake.config, CONFIG).expect("write config");
    for (i, chunk) in chunks.iter().enumerate() {
        let path = lake.lake.with_extension(format!("{i}.jsonl"));
        std::fs::write(&path, chunk.join("\n")).expect("write chunk");
        common::ingest_into(&lake.lake, &path);
        if compact_after == Some(i) {
            let compact = lake.run(&["compact"], &[]);
            assert!(compact.status.success(), "{compact:?}");
        }
    }
    (
        lake.stdout(&["invoice", "--month", "2026-03"]),
        lake.stdout(&["health", "--as-of", "2026-03-31T12:00:00Z"]),
    )
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(6))]

    /// Figures do not depend on the order of events, on how they are split into
    /// files, or on a compaction between two of those files.
    #[test]
    fn reports_ignore_event_order_file_split_and_compaction(
        seed in proptest::prelude::any::<u64>(),
        cuts in proptest::collection::vec(0usize..1000, 1..4),
        compact_after in proptest::option::of(0usize..3),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let march = std::fs::read_to_string(&write_events(dir.path())[1]).expect("read events");
        let lines: Vec<String> = march.lines().map(str::to_string).collect();
        let baseline = reports_of_chunks(std::slice::from_ref(&lines), None);

        let mut shuffled = lines.clone();
        let mut rng = common::Lcg(seed);
        for i in (1..shuffled.len()).rev() {
            let j = usize::try_from(rng.next()).unwrap() % (i + 1);
            shuffled.swap(i, j);
        }
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c * shuffled.len() / 1000).collect();
        bounds.push(shuffled.len());
        bounds.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for end in bounds {
            if end > start {
                chunks.push(shuffled[start..end].to_vec());
                start = end;
            }
        }
        proptest::prop_assert_eq!(reports_of_chunks(&chunks, compact_after), baseline);
    }
}

#[test]
fn tenant_sql_sees_only_its_tenant() {
    let lake = build_lake();
    let tenants = lake.stdout(&[
        "sql",
        "--tenant",
        "alpha",
        "SELECT DISTINCT tenant_id FROM usage_events ORDER BY 1",
    ]);
    assert_eq!(tenants, "tenant_id\nalpha\n");
    let widened = lake.stdout(&[
        "sql",
        "--tenant",
        "alpha",
        "SELECT DISTINCT tenant_id FROM usage_events WHERE tenant_id = 'alpha' OR tenant_id = 'bravo' OR true",
    ]);
    assert_eq!(widened, "tenant_id\nalpha\n");
    // Would divide by zero on any row of bravo; alpha's query never reads one.
    let guarded = lake.stdout(&[
        "sql",
        "--tenant",
        "alpha",
        "SELECT count(*) AS n FROM usage_events WHERE CAST(value AS BIGINT) / (CASE WHEN tenant_id = 'bravo' THEN 0 ELSE 1 END) >= 0",
    ]);
    assert_ne!(guarded, "n\n0\n");
    let all = lake.stdout(&[
        "sql",
        "SELECT DISTINCT tenant_id FROM usage_events ORDER BY 1",
    ]);
    assert_eq!(all, "tenant_id\nalpha\nbravo\ncharlie\ndelta\n");
    let other_tenant = lake.stdout(&[
        "sql",
        "--tenant",
        "echo",
        "SELECT count(*) AS n FROM usage_events",
    ]);
    assert_eq!(other_tenant, "n\n0\n");
}

#[test]
fn sandbox_refuses_every_escape_with_a_clean_error() {
    let lake = build_lake();
    for common::SqlEscape { sql, limit, error } in common::SQL_ESCAPES {
        let env: Vec<(String, &str)> = limit
            .iter()
            .map(|(key, value)| {
                let value = value.trim_matches('"');
                (format!("ALLOT__API__{}", key.to_uppercase()), value)
            })
            .collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let output = lake.run(&["sql", "--tenant", "alpha", sql], &env);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{sql}: {stderr}");
        assert!(output.stdout.is_empty(), "{sql}: printed data");
        assert!(stderr.contains(error), "{sql}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{sql}: {stderr}");
        for leak in ["/tmp", "/etc", "bravo", "usage_events/", ".parquet"] {
            assert!(
                !stderr.contains(leak),
                "{sql}: error leaks {leak}: {stderr}"
            );
        }
    }
}

/// Every report of the test lake that rollups can serve, rendered as CSV: March
/// invoices, noisy neighbours over March and over a mid-day window, health at and
/// between whole hours, one tenant's hourly and daily usage, and an allocation by
/// a gauge.
async fn report_figures(lake: &Path, settings: &allot_query::reports::ReportSettings) -> String {
    use allot_query::render::{
        allocation_table, health_table, invoices_table, noisy_table, usage_table,
    };
    use allot_query::reports;
    use allot_query::request::{NoisyRequest, RawNoisyRequest, RawUsageRequest, UsageRequest};
    let location = allot_query::LakeLocation::parse(lake.to_str().unwrap()).unwrap();
    let snapshot = allot_lake::snapshot::LakeSnapshot::load(&location)
        .await
        .unwrap();
    let at = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    };
    let march: allot_query::period::Period = "2026-03".parse().unwrap();
    let mut out = String::new();
    let invoices = reports::invoices(&snapshot, settings, march, None)
        .await
        .unwrap();
    let billed: Vec<_> = invoices
        .iter()
        .map(|i| allot_query::billed::BilledInvoice::draft(i, Vec::new()))
        .collect();
    out += &invoices_table(&billed).to_csv();
    // Whole days, and a mid-day window whose whole hours come from rollups.
    for (from, to) in [
        ("2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z"),
        ("2026-03-03T05:00:00Z", "2026-03-09T17:00:00Z"),
    ] {
        let noisy = NoisyRequest::try_from(RawNoisyRequest {
            from: Some(from.to_string()),
            to: Some(to.to_string()),
            metric: None,
            bucket: None,
            all: true,
            now: at(to),
            config: &settings.config,
        })
        .unwrap();
        let rows = reports::noisy(&snapshot, settings, &noisy).await.unwrap();
        out += &noisy_table(&rows, true).to_csv();
    }
    // Hour-aligned health reads whole hours from rollups; the minutes of the
    // other come from raw events.
    for as_of in ["2026-03-20T13:17:05Z", "2026-03-20T13:00:00Z"] {
        let health = reports::health(&snapshot, settings, at(as_of), None)
            .await
            .unwrap();
        out += &health_table(&health).to_csv();
    }
    for bucket in ["1h", "1d"] {
        let usage = UsageRequest::try_from(RawUsageRequest {
            tenant: "bravo".parse().unwrap(),
            from: Some("2026-02-27T00:00:00Z".to_string()),
            to: Some("2026-03-05T00:00:00Z".to_string()),
            bucket: Some(bucket.to_string()),
            metric: None,
            now: at("2026-03-05T00:00:00Z"),
        })
        .unwrap();
        out += &usage_table(
            &reports::usage_series(&snapshot, settings, &usage)
                .await
                .unwrap(),
        )
        .to_csv();
    }
    let pools = allot_query::allocation::parse_costs_csv(
        "period,pool,amount,currency,driver\n2026-03,storage,1000.00,USD,storage_bytes\n",
        &settings.catalog,
        "USD",
    )
    .unwrap();
    out += &allocation_table(
        &reports::allocation(&snapshot, settings, &pools, march)
            .await
            .unwrap(),
    )
    .to_csv();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn rollups_give_the_figures_of_the_raw_events() {
    let lake = build_lake();
    let config = allot_schemas::config::Config::from_toml_str(CONFIG, "test", []).unwrap();
    let rolled = allot_query::reports::ReportSettings::new(config);
    let raw = allot_query::reports::ReportSettings {
        use_rollups: false,
        ..rolled.clone()
    };
    let location = allot_query::LakeLocation::parse(lake.lake.to_str().unwrap()).unwrap();
    let expected = report_figures(&lake.lake, &raw).await;
    assert!(
        expected.contains("alpha,2026-03,compute_seconds"),
        "{expected}"
    );

    let refreshed = allot_lake::rollup::refresh_rollups(
        &location,
        &rolled.catalog,
        allot_lake::dedup::DedupWindow::default(),
    )
    .await
    .unwrap();
    let partitions = (28 + 31) * TENANTS.len() as u64;
    assert_eq!(refreshed.partitions, partitions);
    let snapshot = allot_lake::snapshot::LakeSnapshot::load(&location)
        .await
        .unwrap();
    let mut session = allot_lake::session::LakeSession::new(
        &snapshot,
        &allot_lake::session::Scope::AllTenants,
        &allot_lake::session::SessionLimits::default(),
    )
    .unwrap();
    session
        .attach_rollups(&snapshot.hourly, &rolled.catalog)
        .unwrap();
    assert_eq!(
        session.current_rollups().await.unwrap().len() as u64,
        partitions
    );
    assert_eq!(report_figures(&lake.lake, &rolled).await, expected);

    // A late event lands in one partition: its rollups no longer match its files,
    // so reports read it raw until the next refresh, which redoes it alone.
    let late = lake._dir.path().join("late.jsonl");
    std::fs::write(
        &late,
        r#"{"event_id":"late-1","tenant_id":"bravo","ts":"2026-03-03T10:30:00Z","metric":"storage_bytes","value":7000000000,"resource":"r1"}
{"event_id":"late-2","tenant_id":"bravo","ts":"2026-03-03T11:00:00Z","metric":"compute_seconds","value":3600.5,"resource":"r1"}
"#,
    )
    .unwrap();
    common::ingest_into(&lake.lake, &late);
    let expected_late = rollups_follow(&lake.lake, (&raw, &rolled), &expected, 1).await;

    // Another hold for the gauge: no rollup matches any more, the figures follow
    // the new hold, and a refresh redoes every partition.
    let config = allot_schemas::config::Config::from_toml_str(
        &format!("{CONFIG}\n[metrics.storage_bytes]\nkind = \"gauge\"\nunit = \"GiB-month\"\ndivisor = \"1073741824\"\nhold = \"3h\"\n"),
        "test",
        [],
    )
    .unwrap();
    let rolled_3h = allot_query::reports::ReportSettings::new(config);
    let raw_3h = allot_query::reports::ReportSettings {
        use_rollups: false,
        ..rolled_3h.clone()
    };
    rollups_follow(
        &lake.lake,
        (&raw_3h, &rolled_3h),
        &expected_late,
        partitions,
    )
    .await;
}

/// After a change to the lake or the catalog: the figures differ from `before`,
/// and with rollups they equal the raw ones both before and after a refresh,
/// which redoes `redone` partitions. Returns the new figures.
async fn rollups_follow(
    lake: &Path,
    (raw, rolled): (
        &allot_query::reports::ReportSettings,
        &allot_query::reports::ReportSettings,
    ),
    before: &str,
    redone: u64,
) -> String {
    let expected = report_figures(lake, raw).await;
    assert_ne!(expected, before);
    assert_eq!(report_figures(lake, rolled).await, expected);
    let location = allot_query::LakeLocation::parse(lake.to_str().unwrap()).unwrap();
    let refreshed = allot_lake::rollup::refresh_rollups(
        &location,
        &rolled.catalog,
        allot_lake::dedup::DedupWindow::default(),
    )
    .await
    .unwrap();
    assert_eq!(refreshed.partitions, redone);
    assert_eq!(report_figures(lake, rolled).await, expected);
    expected
}

/// A report over one month of a lake of several reads that month's rollups
/// alone: with every February rollup file made unreadable, March's invoices
/// (every tenant's and one tenant's) are still served from March's rollups,
/// to the figures of the raw events, while a check of the whole lake fails on
/// the February files.
#[tokio::test(flavor = "multi_thread")]
async fn a_months_report_reads_only_that_months_rollups() {
    let lake = build_lake();
    let invoices = |env: &[(&str, &str)]| {
        [
            &["invoice", "--month", "2026-03"][..],
            &["invoice", "--month", "2026-03", "--tenant", "bravo"],
        ]
        .map(|args| {
            let output = lake.run(args, env);
            assert!(
                output.status.success(),
                "allot {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).expect("utf-8")
        })
    };
    let raw = invoices(&[("ALLOT__REPORTS__ROLLUPS", "false")]);
    assert!(
        raw[0].contains("alpha,2026-03,compute_seconds"),
        "{}",
        raw[0]
    );
    lake.stdout(&["compact"]);

    let hourly = lake.lake.join("usage_hourly");
    let mut spoiled = 0;
    for entry in std::fs::read_dir(&hourly).expect("usage_hourly") {
        let dir = entry.expect("entry").path();
        if !dir.to_string_lossy().contains("day=2026-02-") {
            continue;
        }
        for file in std::fs::read_dir(&dir).expect("day directory") {
            std::fs::write(file.expect("file").path(), b"not parquet").expect("spoil");
            spoiled += 1;
        }
    }
    assert!(spoiled >= 28, "{spoiled} February rollup files");

    assert_eq!(invoices(&[]), raw);
    let location = allot_query::LakeLocation::parse(lake.lake.to_str().unwrap()).unwrap();
    let snapshot = allot_lake::snapshot::LakeSnapshot::load(&location)
        .await
        .unwrap();
    let catalog = allot_schemas::config::Config::from_toml_str(CONFIG, "test", [])
        .unwrap()
        .catalog();
    let mut session = allot_lake::session::LakeSession::new(
        &snapshot,
        &allot_lake::session::Scope::AllTenants,
        &allot_lake::session::SessionLimits::default(),
    )
    .unwrap();
    session.attach_rollups(&snapshot.hourly, &catalog).unwrap();
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    let march = session
        .current_rollups_between(day(1), day(31))
        .await
        .unwrap();
    assert_eq!(march.len(), 31 * TENANTS.len());
    assert!(session.current_rollups().await.is_err());
}
