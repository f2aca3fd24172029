//! Lake maintenance through the `allot` binary: compaction past a partition it
//! cannot rewrite, vacuum of orphan files, and maintenance commands on a lake
//! that does not exist.

use crate::common;

use std::borrow::Cow;

use allot_ingest::batch::UsageBatchBuilder;
use allot_schemas::decimal::Decimal9;
use allot_schemas::event::UsageEvent;
use allot_schemas::layout::{LakeLocation, LakeTable, Provenance};

/// Two tenants, two files each on one day: both partitions want compacting.
fn backfill_two_tenants(lake: &common::CliLake) {
    for part in 0..2 {
        let lines: Vec<String> = ["acme", "bravo"]
            .iter()
            .map(|tenant| {
                format!(
                    r#"{{"event_id":"{tenant}-{part}","tenant_id":"{tenant}","ts":"2026-09-01T0{part}:00:00Z","metric":"compute_seconds","value":3600}}"#
                )
            })
            .collect();
        let path = lake.dir.path().join(format!("events-{part}.jsonl"));
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        lake.ingest(&path);
    }
}

/// Appends an event of `tenant` at `ts_micros` straight to `usage_events`, as
/// an ingest before the timestamp range was enforced could.
async fn append_event(lake: &common::CliLake, tenant: &str, event_id: &str, ts_micros: i64) {
    let mut builder = UsageBatchBuilder::default();
    let event = UsageEvent {
        event_id: Cow::Borrowed(event_id),
        tenant_id: Cow::Borrowed(tenant),
        ts_micros,
        metric: Cow::Borrowed("compute_seconds"),
        value: Decimal9::from_scaled(1_000_000_000).unwrap(),
        resource: None,
        region: None,
        service: None,
        labels: Vec::new(),
        schema_version: 1,
    };
    builder.append(
        &event,
        Provenance::File {
            name: "old.jsonl",
            line: 1,
        },
    );
    let batch = builder
        .finish(chrono::Utc::now().timestamp_micros())
        .unwrap();
    let location = LakeLocation::parse(lake.root().to_str().unwrap()).unwrap();
    allot_lake::append::append_batch(&location, LakeTable::UsageEvents, batch, Vec::new(), &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn one_old_timestamp_does_not_stop_compaction() {
    let lake = common::CliLake::new(common::FLAT_PRICE_BOOK);
    backfill_two_tenants(&lake);
    // 1600-02-29T12:00:00Z, which nanoseconds cannot hold, twice in one
    // partition: a lake written before ingest refused it.
    let old = chrono::DateTime::parse_from_rfc3339("1600-02-29T12:00:00Z")
        .unwrap()
        .timestamp_micros();
    append_event(&lake, "relic", "r1", old).await;
    append_event(&lake, "relic", "r2", old).await;

    let out = lake.run(&["compact"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("2 tenant-days compacted"), "{stdout}");
    assert!(
        stdout.contains("1 tenant-days could not be compacted and were skipped"),
        "{stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1600-02-29"), "{stderr}");
    // The old partition is left as it was; the reports read the others.
    let relic = lake
        .root()
        .join("usage_events/tenant_id=relic/day=1600-02-29");
    assert_eq!(std::fs::read_dir(relic).unwrap().count(), 2);
    for args in [
        vec!["invoice", "--month", "2026-09", "--tenant", "acme"],
        vec!["health", "--as-of", "2026-09-02"],
        vec![
            "sql",
            "SELECT tenant_id, count(*) FROM usage_events GROUP BY 1 ORDER BY 1",
        ],
    ] {
        let out = lake.run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The old rows are not read; the four others are.
    let out = lake.run(&["sql", "SELECT count(*) AS n FROM usage_events"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "n\n4",
        "{out:?}"
    );
}

/// Every file under `dir`, recursively, sorted.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = common::files_under(dir);
    found.sort();
    found
}

/// The files of a table outside its log.
fn data_files(table: &std::path::Path) -> Vec<std::path::PathBuf> {
    let log = table.join("_delta_log");
    files(table)
        .into_iter()
        .filter(|p| !p.starts_with(&log))
        .collect()
}

/// Sets a file's modification time `age` in the past.
fn age(path: &std::path::Path, age: std::time::Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[test]
fn vacuum_deletes_old_orphans_and_nothing_a_version_needs() {
    let lake = common::CliLake::new(common::FLAT_PRICE_BOOK);
    backfill_two_tenants(&lake);
    let out = lake.run(&["compact"]);
    assert!(out.status.success(), "{out:?}");
    let table = lake.root().join("usage_events");
    let log = files(&table.join("_delta_log"));
    let before = data_files(&table);
    let data = before
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap()
        .clone();
    let partition = data.parent().unwrap();
    // A killed compaction's output, two hours old, and a collector's file
    // written a moment ago whose commit may be in flight: no commit names either.
    let old_orphan = partition.join("part-00000-killed-compaction.parquet");
    let new_orphan = partition.join("part-00000-in-flight.parquet");
    std::fs::copy(&data, &old_orphan).unwrap();
    std::fs::copy(&data, &new_orphan).unwrap();
    age(&old_orphan, std::time::Duration::from_secs(7_200));
    // A stray file of the log, as old: never the vacuum's.
    let stray = table.join("_delta_log").join("stray.parquet");
    std::fs::copy(&data, &stray).unwrap();
    age(&stray, std::time::Duration::from_secs(7_200));
    let sums = |lake: &common::CliLake| {
        let out = lake.run(&[
            "sql",
            "SELECT tenant_id, sum(value) FROM usage_events GROUP BY 1 ORDER BY 1",
        ]);
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    let figures = sums(&lake);

    let out = lake.run(&["vacuum", "--retention", "1h"]);
    assert!(out.status.success(), "{out:?}");
    let after = data_files(&table);
    assert!(!old_orphan.exists(), "the old orphan is still there");
    assert!(
        new_orphan.exists(),
        "a file younger than the retention was deleted"
    );
    assert!(stray.exists(), "a file of _delta_log was deleted");
    // The files compaction removed a moment ago stay for readers of the older
    // versions, and every active file stays.
    let mut expected = before.clone();
    expected.push(new_orphan.clone());
    expected.sort();
    assert_eq!(after, expected);
    assert!(
        log.iter().all(|p| p.exists()),
        "a file of the log was deleted"
    );
    assert_eq!(sums(&lake), figures);

    // With no retention, only what the newest version needs (and the log) is left.
    let out = lake.run(&["vacuum", "--retention", "0s"]);
    assert!(out.status.success(), "{out:?}");
    assert!(!new_orphan.exists());
    assert!(stray.exists());
    assert_eq!(sums(&lake), figures);
}

#[test]
fn maintenance_commands_on_a_lake_that_does_not_exist_exit_2() {
    let work = tempfile::tempdir().unwrap();
    let typo = work.path().join("lkae");
    let config = work.path().join("allot.toml");
    std::fs::write(&config, common::FLAT_PRICE_BOOK).unwrap();
    let out_dir = work.path().join("export");
    for args in [
        vec!["compact"],
        vec!["vacuum", "--retention", "0s"],
        vec!["tenant", "delete", "acme", "--confirm", "acme"],
        vec!["tenant", "delete", "acme", "--dry-run"],
        vec![
            "tenant",
            "export",
            "acme",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        vec!["close", "--month", "2026-09"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_allot"))
            .args(&args)
            .arg("--lake")
            .arg(&typo)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("lkae"), "{args:?}: {stderr}");
        assert!(!typo.exists(), "{args:?} created the lake");
    }
}
