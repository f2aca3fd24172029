//! `allot tenant delete` stopped anywhere and run again: killed right after each
//! of its commits (the `test-hooks` build's abort), the next run finishes the
//! erasure, and then no file or directory of the lake names the tenant but the
//! audit rows recording it: no row of `alerts` either (its notices, claims and
//! attempts), while the other tenants' and the all-tenants alerts stay and a
//! server that read the alerts before the erasure is fenced. A tenant known only
//! from rejected events or left-over files can be erased too, and a dry run
//! writes nothing.

use crate::common;

use std::path::{Path, PathBuf};

use allot_query::alerts::{
    AlertRecord, AlertState, AlertStore, AttemptDetails, Notice, notice_key,
};
use allot_schemas::layout::LakeLocation;
use allot_schemas::table_schema::notice_key_tenant;
use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// The erasure's steps, each ending in a commit.
const STEPS: [&str; 6] = [
    "intent",
    "usage_events",
    "rejected_events",
    "usage_hourly",
    "alerts",
    "finished",
];

/// A lake with acme and bravo over two days, a rejected line of each, two
/// backfills compacted (so rollups exist).
fn lake() -> common::CliLake {
    let lake = common::CliLake::new(common::FLAT_PRICE_BOOK);
    for part in 0..2 {
        let lines = [
            format!(
                r#"{{"event_id":"a{part}","tenant_id":"acme","ts":"2026-09-0{}T03:00:00Z","metric":"compute_seconds","value":3600}}"#,
                part + 1
            ),
            format!(
                r#"{{"event_id":"b{part}","tenant_id":"bravo","ts":"2026-09-0{}T03:00:00Z","metric":"compute_seconds","value":7200}}"#,
                part + 1
            ),
            format!(
                r#"{{"event_id":"x{part}","tenant_id":"acme","ts":"2026-09-01T03:00:00Z","metric":"nope","value":1}}"#
            ),
            format!(
                r#"{{"event_id":"y{part}","tenant_id":"bravo","ts":"2026-09-01T03:00:00Z","metric":"nope","value":1}}"#
            ),
        ];
        ingest(&lake, &lines.join("\n"), part);
    }
    ok(&lake, &["compact"], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(record_alerts(&lake));
    lake
}

/// The alert store of the lake.
async fn alert_store(lake: &common::CliLake) -> AlertStore {
    let location = LakeLocation::parse(lake.root().to_str().unwrap()).unwrap();
    AlertStore::open(&location).await.unwrap()
}

/// A notice of rule `q90` (or `all` for `*`), firing, to channel `hook`.
fn firing(tenant: &str, number: u64) -> AlertRecord {
    let rule = if tenant == "*" { "all" } else { "q90" };
    AlertRecord::Notice(Notice {
        key: notice_key(rule, tenant, number),
        rule: rule.to_string(),
        tenant_id: tenant.to_string(),
        state: AlertState::Firing,
        number,
        body: format!(r#"{{"tenant_id":"{tenant}"}}"#),
        channels: vec!["hook".to_string()],
        recorded_at: 1_790_000_000_000_000,
    })
}

/// A failed delivery attempt of `key` to `hook`.
fn attempt(key: &str) -> AlertRecord {
    AlertRecord::Attempt {
        key: key.to_string(),
        channel: "hook".to_string(),
        details: AttemptDetails {
            by: "server-1".to_string(),
            until: 1_790_000_100_000_000,
            attempt: Some(1),
            outcome: Some("failed".to_string()),
            error: Some("status 503".to_string()),
            next_attempt_at: Some(1_790_000_010_000_000),
        },
        at: 1_790_000_001_000_000,
    }
}

/// Alerts of acme, bravo and all tenants, each notice with a claim and an
/// attempt, over several commits; acme's records come last, so that the
/// erasure removes the rows of the newest sequence number.
async fn record_alerts(lake: &common::CliLake) {
    let mut store = alert_store(lake).await;
    let claim = |key: String| AlertRecord::Claim {
        key,
        channel: "hook".to_string(),
        details: AttemptDetails {
            by: "server-1".to_string(),
            until: 1_790_000_100_000_000,
            attempt: None,
            outcome: None,
            error: None,
            next_attempt_at: None,
        },
        at: 1_790_000_000_500_000,
    };
    for tenant in ["bravo", "*", "acme"] {
        let key = notice_key(if tenant == "*" { "all" } else { "q90" }, tenant, 1);
        assert!(store.commit(vec![firing(tenant, 1)]).await.unwrap());
        assert!(store.commit(vec![claim(key.clone())]).await.unwrap());
        assert!(store.commit(vec![attempt(&key)]).await.unwrap());
    }
}

fn ingest(lake: &common::CliLake, lines: &str, part: usize) {
    let path = lake.dir.path().join(format!("events-{part}.jsonl"));
    std::fs::write(&path, format!("{lines}\n")).unwrap();
    ok(
        lake,
        &[
            "ingest",
            "--no-progress",
            "--from-file",
            path.to_str().unwrap(),
        ],
        &[],
    );
}

fn ok(lake: &common::CliLake, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = lake.run_with_env(args, env);
    assert!(
        out.status.success(),
        "allot {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether a Parquet file has `tenant` in its `tenant_id` column.
fn holds(path: &Path, tenant: &str) -> bool {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    reader.into_iter().any(|batch| {
        let batch = batch.unwrap();
        let names = |name: &str, tenant_of: fn(&str) -> Option<&str>| {
            batch.column_by_name(name).is_some_and(|column| {
                let text = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
                let text = text.as_string::<i32>();
                (0..text.len())
                    .any(|i| text.is_valid(i) && tenant_of(text.value(i)) == Some(tenant))
            })
        };
        // The tenant's column, or the notice key of an `alerts` row.
        names("tenant_id", |value| Some(value)) || names("key", notice_key_tenant)
    })
}

/// The paths of the lake that name `tenant` (a `tenant_id=` segment) or hold
/// a row of it, but for the audit table, which records the erasure.
fn naming(lake: &common::CliLake, tenant: &str) -> Vec<PathBuf> {
    let audit = lake.root().join("audit");
    common::paths_under(&lake.root())
        .into_iter()
        .filter(|p| !p.starts_with(&audit))
        .filter(|p| {
            p.to_string_lossy().contains(&format!("tenant_id={tenant}"))
                || (p.extension().is_some_and(|e| e == "parquet") && holds(p, tenant))
        })
        .collect()
}

/// The keys of the notices the alerts table holds, in order.
fn notice_keys(lake: &common::CliLake) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(alert_store(lake));
    let log = store.log();
    log.notices.iter().map(|n| n.key.clone()).collect()
}

/// The `details` of the audit rows of `tenant`'s erasures.
fn audit_statuses(lake: &common::CliLake) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rows = runtime.block_on(common::read_lake_table(&lake.root(), "audit"));
    let mut statuses: Vec<String> = rows
        .iter()
        .map(|row| {
            let details: serde_json::Value =
                serde_json::from_str(row.columns["details"].as_deref().unwrap()).unwrap();
            details["status"].as_str().unwrap().to_string()
        })
        .collect();
    statuses.sort();
    statuses
}

#[test]
fn an_erasure_killed_after_any_commit_is_finished_by_the_next_run() {
    for step in STEPS {
        let lake = lake();
        let bravo = ok(
            &lake,
            &["invoice", "--month", "2026-09", "--tenant", "bravo"],
            &[],
        );
        assert!(!naming(&lake, "acme").is_empty());
        assert_eq!(notice_keys(&lake), ["q90/bravo/1", "all/*/1", "q90/acme/1"]);
        let delete = ["tenant", "delete", "acme", "--confirm", "acme"];
        let killed = lake.run_with_env(&delete, &[("ALLOT_TEST_ABORT_AFTER_ERASURE_STEP", step)]);
        assert!(!killed.status.success(), "{step}: not killed: {killed:?}");
        assert_eq!(killed.status.code(), None, "{step}: {killed:?}");

        if step == "finished" {
            // Nothing was left to do: the tenant is gone.
            let again = lake.run(&delete);
            assert_eq!(again.status.code(), Some(2), "{step}: {again:?}");
        } else {
            // A dry run says what is left, and writes nothing.
            let before = common::paths_under(&lake.root());
            let said = ok(&lake, &["tenant", "delete", "acme", "--dry-run"], &[]);
            assert!(
                said.contains("the erasure of acme started at"),
                "{step}: {said}"
            );
            assert_eq!(common::paths_under(&lake.root()), before, "{step}");
            let said = ok(&lake, &delete, &[]);
            assert!(said.contains("acme erased"), "{step}: {said}");
        }
        assert_eq!(naming(&lake, "acme"), Vec::<PathBuf>::new(), "{step}");
        assert_eq!(notice_keys(&lake), ["q90/bravo/1", "all/*/1"], "{step}");
        assert_eq!(audit_statuses(&lake), ["finished", "started"], "{step}");
        assert_eq!(
            ok(
                &lake,
                &["invoice", "--month", "2026-09", "--tenant", "bravo"],
                &[]
            ),
            bravo,
            "{step}"
        );
        // Once finished, the tenant is unknown.
        let again = lake.run(&delete);
        assert_eq!(again.status.code(), Some(2), "{step}: {again:?}");
    }
}

#[test]
fn a_tenant_known_only_from_rejected_events_or_left_over_files_is_erased() {
    let lake = lake();
    ingest(
        &lake,
        r#"{"event_id":"g1","tenant_id":"ghost","ts":"2026-09-01T03:00:00Z","metric":"nope","value":1}"#,
        2,
    );
    let said = ok(&lake, &["tenant", "delete", "ghost", "--dry-run"], &[]);
    assert!(
        said.contains("rejected_events: would remove 1 rows of ghost"),
        "{said}"
    );
    ok(
        &lake,
        &["tenant", "delete", "ghost", "--confirm", "ghost"],
        &[],
    );
    assert_eq!(naming(&lake, "ghost"), Vec::<PathBuf>::new());

    // An erased tenant's file left behind (a compaction's, killed before its
    // commit), written before the erasure: the tenant is known by it.
    ok(
        &lake,
        &["tenant", "delete", "acme", "--confirm", "acme"],
        &[],
    );
    let partition = lake
        .root()
        .join("usage_events/tenant_id=acme/day=2026-09-01");
    std::fs::create_dir_all(&partition).unwrap();
    let bravo_file = common::paths_under(&lake.root().join("usage_events"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let orphan = partition.join("part-orphan.parquet");
    std::fs::copy(&bravo_file, &orphan).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .unwrap();
    let said = ok(
        &lake,
        &["tenant", "delete", "acme", "--confirm", "acme"],
        &[],
    );
    assert!(
        said.contains("usage_events: removed 0 rows of acme in 0 files; 1 files deleted"),
        "{said}"
    );
    assert_eq!(naming(&lake, "acme"), Vec::<PathBuf>::new());

    let unknown = lake.run(&["tenant", "delete", "nobody", "--dry-run"]);
    assert_eq!(unknown.status.code(), Some(2));
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("nobody: no such tenant") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_dry_run_writes_nothing() {
    let lake = common::CliLake::new(common::FLAT_PRICE_BOOK);
    ingest(
        &lake,
        r#"{"event_id":"a1","tenant_id":"acme","ts":"2026-09-01T03:00:00Z","metric":"compute_seconds","value":1}"#,
        0,
    );
    // A lake without a usage_hourly table (as an older version left it).
    let hourly = lake.root().join("usage_hourly");
    if hourly.exists() {
        std::fs::remove_dir_all(&hourly).unwrap();
    }
    let before = common::paths_under(&lake.root());
    let said = ok(&lake, &["tenant", "delete", "acme", "--dry-run"], &[]);
    assert!(
        said.contains("usage_events: would remove 1 rows of acme"),
        "{said}"
    );
    assert_eq!(common::paths_under(&lake.root()), before);
}

#[test]
fn a_server_that_read_the_alerts_before_an_erasure_is_fenced_and_forgets_the_tenant() {
    let lake = lake();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut before = runtime.block_on(alert_store(&lake));
    assert_eq!(before.log().deliveries.len(), 3);
    ok(
        &lake,
        &["tenant", "delete", "acme", "--confirm", "acme"],
        &[],
    );
    assert_eq!(naming(&lake, "acme"), Vec::<PathBuf>::new());

    // Its next record about acme (a retry) is refused, and the log it reads
    // again knows nothing of acme: no delivery to retry, no notice to resolve.
    let committed = runtime.block_on(before.commit(vec![attempt("q90/acme/1")]));
    assert!(!committed.unwrap());
    let log = before.log();
    assert_eq!(log.deliveries.len(), 2);
    assert!(
        log.last_notices()
            .keys()
            .all(|(_, tenant)| tenant != "acme")
    );
    assert_eq!(naming(&lake, "acme"), Vec::<PathBuf>::new());

    // The store still commits, the first time, though the erasure removed the
    // rows of the newest sequence number; so does one opened afresh.
    assert!(
        runtime
            .block_on(before.commit(vec![firing("bravo", 2)]))
            .unwrap()
    );
    let mut after = runtime.block_on(alert_store(&lake));
    assert!(
        runtime
            .block_on(after.commit(vec![attempt("q90/bravo/2")]))
            .unwrap()
    );
    assert_eq!(
        notice_keys(&lake),
        ["q90/bravo/1", "all/*/1", "q90/bravo/2"]
    );
}
