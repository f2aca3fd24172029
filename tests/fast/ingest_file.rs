//! `allot ingest --from-file` end to end: exact counts for mixed good and bad
//! lines, every bad-input case set aside with its reason code, re-runs that add
//! nothing, nothing written outside the lake, and DuckDB reading back the exact
//! decimal values.

use crate::common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn allot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_allot"))
}

/// Runs `allot ingest --from-file FILE --lake LAKE --format json` in `cwd`.
fn ingest(cwd: &Path, file: &Path, lake: &Path) -> Value {
    let output = allot()
        .current_dir(cwd)
        .args(["ingest", "--from-file"])
        .arg(file)
        .arg("--lake")
        .arg(lake)
        .args(["--format", "json"])
        .output()
        .expect("run allot");
    assert!(
        output.status.success(),
        "allot ingest failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON summary")
}

fn event(id: &str, tenant: &str, ts: &str, metric: &str, value: &str) -> String {
    format!(
        r#"{{"event_id":"{id}","tenant_id":"{tenant}","ts":"{ts}","metric":"{metric}","value":{value}}}"#
    )
}

/// Good events: (line, tenant, event id, exact stored value, UTC day).
fn good_lines() -> Vec<(String, &'static str, String, &'static str, &'static str)> {
    let mut lines = Vec::new();
    let cases = [
        (
            "acme",
            "2026-03-01T10:00:00Z",
            "compute_seconds",
            "12.5",
            "12.500000000",
            "2026-03-01",
        ),
        (
            "acme",
            "2026-03-02T23:59:59.999999+00:00",
            "egress_bytes",
            "1073741824",
            "1073741824.000000000",
            "2026-03-02",
        ),
        // 01:00 at +05:30 is 19:30 UTC the day before: the partition is the UTC day.
        (
            "globex",
            "2026-03-01T01:00:00+05:30",
            "storage_bytes",
            "0",
            "0.000000000",
            "2026-02-28",
        ),
        (
            "globex",
            "2026-03-01T10:00:00Z",
            "compute_seconds",
            "1.0000000005",
            "1.000000000",
            "2026-03-01",
        ),
        (
            "initech-1",
            "2026-03-03T10:00:00Z",
            "compute_seconds",
            "2.0000000015",
            "2.000000002",
            "2026-03-03",
        ),
        (
            "initech-1",
            "2026-03-03T10:00:00Z",
            "compute_seconds",
            "99999999999999999999.999999999",
            "99999999999999999999.999999999",
            "2026-03-03",
        ),
        (
            "initech-1",
            "2026-03-03T10:00:00Z",
            "egress_bytes",
            "1.5e3",
            "1500.000000000",
            "2026-03-03",
        ),
    ];
    for (i, (tenant, ts, metric, value, stored, day)) in cases.into_iter().enumerate() {
        let id = format!("ev-{i}");
        lines.push((
            event(&id, tenant, ts, metric, value),
            tenant,
            id,
            stored,
            day,
        ));
    }
    lines
}

/// Bad lines and the reason code each must get.
fn bad_lines() -> Vec<(Vec<u8>, &'static str)> {
    let future = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let ok_ts = "2026-03-01T10:00:00Z";
    let mut invalid_utf8 = event("bad-utf8", "acme", ok_ts, "compute_seconds", "1").into_bytes();
    invalid_utf8[12] = 0xff;
    let mut huge = br#"{"event_id":"huge","tenant_id":"acme","pad":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 10 << 20));
    huge.extend_from_slice(
        br#"","ts":"2026-03-01T10:00:00Z","metric":"compute_seconds","value":1}"#,
    );
    vec![
        (br#"{"event_id":"trunc","tenant_id":"#.to_vec(), "invalid_json"),
        (b"[1,2,3]".to_vec(), "invalid_json"),
        (br#"{"event_id":"t1","tenant_id":"acme","ts":"2026-03-01T10:00:00Z","metric":"compute_seconds","value":"12"}"#.to_vec(), "invalid_type"),
        (br#"{"event_id":7,"tenant_id":"acme","ts":"2026-03-01T10:00:00Z","metric":"compute_seconds","value":1}"#.to_vec(), "invalid_type"),
        (br#"{"event_id":"m1","tenant_id":"acme","ts":"2026-03-01T10:00:00Z","metric":"compute_seconds"}"#.to_vec(), "missing_field"),
        (br#"{"tenant_id":"acme","ts":"2026-03-01T10:00:00Z","metric":"compute_seconds","value":1}"#.to_vec(), "missing_field"),
        (event("neg", "acme", ok_ts, "compute_seconds", "-1").into_bytes(), "invalid_value"),
        (event("nan", "acme", ok_ts, "compute_seconds", "\"NaN\"").into_bytes(), "invalid_type"),
        (event("nan2", "acme", ok_ts, "compute_seconds", "NaN").into_bytes(), "invalid_json"),
        (event("big", "acme", ok_ts, "compute_seconds", "1e400").into_bytes(), "invalid_value"),
        (event("nooffset", "acme", "2026-03-01T10:00:00", "compute_seconds", "1").into_bytes(), "invalid_timestamp"),
        // Before 1970: the query engine's nanosecond timestamps cannot hold it.
        (event("old", "acme", "1600-02-29T12:00:00Z", "compute_seconds", "1").into_bytes(), "invalid_timestamp"),
        (event("future", "acme", &future, "compute_seconds", "1").into_bytes(), "future_timestamp"),
        (event("gpu", "acme", ok_ts, "gpu_seconds", "1").into_bytes(), "unknown_metric"),
        (
            format!(r#"{{"event_id":"long","tenant_id":"acme","ts":"{ok_ts}","metric":"compute_seconds","value":1,"resource":"{}"}}"#, "r".repeat(300)).into_bytes(),
            "field_too_long",
        ),
        (event(&"e".repeat(129), "acme", ok_ts, "compute_seconds", "1").into_bytes(), "field_too_long"),
        (event("trav", "../x", ok_ts, "compute_seconds", "1").into_bytes(), "invalid_tenant_id"),
        (event("trav2", "../../etc", ok_ts, "compute_seconds", "1").into_bytes(), "invalid_tenant_id"),
        (event("slash", "a/b", ok_ts, "compute_seconds", "1").into_bytes(), "invalid_tenant_id"),
        (event("upper", "Acme", ok_ts, "compute_seconds", "1").into_bytes(), "invalid_tenant_id"),
        (huge, "event_too_large"),
        (invalid_utf8, "invalid_utf8"),
    ]
}

/// Writes the good and bad lines interleaved, with two blank lines.
fn write_input(path: &Path) -> usize {
    let good = good_lines();
    let bad = bad_lines();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut lines = 0;
    for i in 0..good.len().max(bad.len()) {
        if let Some((line, ..)) = good.get(i) {
            file.write_all(line.as_bytes()).unwrap();
            file.write_all(b"\n").unwrap();
            lines += 1;
        }
        if let Some((bytes, _)) = bad.get(i) {
            file.write_all(bytes).unwrap();
            file.write_all(b"\n").unwrap();
            lines += 1;
        }
    }
    file.write_all(b"\n   \n").unwrap();
    file.flush().unwrap();
    lines
}

#[tokio::test]
async fn backfill_counts_rejects_and_reruns_exactly() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("events.jsonl");
    write_input(&input);
    let lake = work.path().join("lake");
    let good = good_lines();
    let bad = bad_lines();
    let mut expected_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (_, reason) in &bad {
        *expected_reasons.entry(reason.to_string()).or_default() += 1;
    }

    let first = ingest(work.path(), &input, &lake);
    assert_eq!(first["accepted"], good.len() as u64, "{first}");
    assert_eq!(first["duplicates_skipped"], 0);
    assert_eq!(first["rejected"], bad.len() as u64);
    assert_eq!(first["blank_lines"], 2);
    let reasons: BTreeMap<String, u64> =
        serde_json::from_value(first["rejected_by_reason"].clone()).unwrap();
    assert_eq!(reasons, expected_reasons);

    // The table holds exactly the good events, with exact values, in their partitions.
    let rows = common::read_lake_table(&lake, "usage_events").await;
    assert_eq!(rows.len(), good.len());
    for (_, tenant, id, stored, day) in &good {
        let row = rows
            .iter()
            .find(|r| r.columns["event_id"].as_deref() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} missing"));
        assert_eq!(row.partition["tenant_id"], *tenant);
        assert!(
            row.file
                .starts_with(&format!("tenant_id={tenant}/day={day}/")),
            "{}",
            row.file
        );
        assert_eq!(row.columns["value"].as_deref(), Some(*stored), "{id}");
        assert!(
            row.columns["source"]
                .as_deref()
                .unwrap()
                .starts_with("file:")
        );
    }

    // Every bad line is a rejected row with its reason, source line and raw prefix.
    let rejected = common::read_lake_table(&lake, "rejected_events").await;
    assert_eq!(rejected.len(), bad.len());
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    for row in &rejected {
        *by_reason
            .entry(row.columns["reason"].clone().unwrap())
            .or_default() += 1;
        let source = row.columns["source"].as_deref().unwrap();
        assert!(source.contains("events.jsonl:"), "{source}");
        assert!(!row.columns["message"].as_deref().unwrap().is_empty());
    }
    assert_eq!(by_reason, expected_reasons);
    let huge = rejected
        .iter()
        .find(|r| r.columns["reason"].as_deref() == Some("event_too_large"))
        .unwrap();
    let huge_len = bad
        .iter()
        .find(|(_, r)| *r == "event_too_large")
        .unwrap()
        .0
        .len();
    assert_eq!(
        huge.columns["raw_len"].as_deref(),
        Some(huge_len.to_string().as_str())
    );
    assert_eq!(
        huge.columns["raw"].as_ref().unwrap().len(),
        2 * 4096,
        "4 KiB kept, shown as hex"
    );
    let traversal = rejected
        .iter()
        .find(|r| r.columns["reason"].as_deref() == Some("invalid_tenant_id"))
        .unwrap();
    assert_eq!(traversal.columns["tenant_id"], None);
    let unknown = rejected
        .iter()
        .find(|r| r.columns["reason"].as_deref() == Some("unknown_metric"))
        .unwrap();
    assert_eq!(unknown.columns["tenant_id"].as_deref(), Some("acme"));

    // Nothing outside the lake: the work dir holds only the input and the lake,
    // and every data file sits under a valid partition directory.
    let mut top: Vec<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    top.sort();
    assert_eq!(top, ["events.jsonl", "lake"]);
    for file in common::files_under(&lake) {
        let relative = file
            .strip_prefix(&lake)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ok = relative.starts_with("usage_events/_delta_log/")
            || relative.starts_with("rejected_events/_delta_log/")
            || relative.starts_with("rejected_events/day=")
            || relative.starts_with("usage_events/tenant_id=");
        assert!(ok, "unexpected file {relative}");
        assert!(!relative.contains(".."), "{relative}");
    }

    // Running the same file again adds nothing.
    let second = ingest(work.path(), &input, &lake);
    assert_eq!(second["accepted"], 0, "{second}");
    assert_eq!(second["duplicates_skipped"], good.len() as u64);
    assert_eq!(second["rejected_already_recorded"], bad.len() as u64);
    assert_eq!(
        common::read_lake_table(&lake, "usage_events").await.len(),
        good.len()
    );
    assert_eq!(
        common::read_lake_table(&lake, "rejected_events")
            .await
            .len(),
        bad.len()
    );

    // An overlapping file adds only its new events.
    let overlap = work.path().join("overlap.jsonl");
    let new_event = event(
        "ev-new",
        "acme",
        "2026-03-05T00:00:00Z",
        "compute_seconds",
        "3",
    );
    std::fs::write(
        &overlap,
        format!("{}\n{}\n{new_event}\n", good[0].0, good[4].0),
    )
    .unwrap();
    let third = ingest(work.path(), &overlap, &lake);
    assert_eq!(
        (
            third["accepted"].as_u64(),
            third["duplicates_skipped"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(
        common::read_lake_table(&lake, "usage_events").await.len(),
        good.len() + 1
    );
}

#[test]
fn duckdb_reads_the_exact_values_from_the_active_files() {
    let work = tempfile::tempdir().unwrap();
    let input = work.path().join("events.jsonl");
    write_input(&input);
    let lake = work.path().join("lake");
    ingest(work.path(), &input, &lake);
    ingest(work.path(), &input, &lake);
    let check = Command::new(common::test_python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lake_check.py"))
        .arg(&lake)
        .arg(&input)
        .output()
        .expect("run lake_check.py");
    assert!(
        check.status.success(),
        "lake_check failed:\n{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn bad_flags_and_config_keys_exit_2_with_one_line() {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("allot.toml");
    std::fs::write(&config, "[ingest]\nflush_rowz = 5\n").unwrap();
    let input = work.path().join("e.jsonl");
    std::fs::write(&input, "").unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["ingest".into(), "--from-fil".into(), "x".into()],
            "--from-fil",
        ),
        (
            vec![
                "ingest".into(),
                "--from-file".into(),
                input.display().to_string(),
                "--lake".into(),
                "l".into(),
                "--config".into(),
                config.display().to_string(),
            ],
            "ingest.flush_rowz",
        ),
        (
            vec![
                "ingest".into(),
                "--from-file".into(),
                "/nonexistent.jsonl".into(),
                "--lake".into(),
                "l".into(),
            ],
            "/nonexistent.jsonl",
        ),
        (
            vec![
                "ingest".into(),
                "--from-file".into(),
                input.display().to_string(),
            ],
            "--lake",
        ),
    ];
    for (args, needle) in cases {
        let output = allot()
            .current_dir(work.path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let output = allot()
        .current_dir(work.path())
        .args(["ingest", "--from-file", "e.jsonl", "--lake", "l"])
        .env("ALLOT__INGEST__FLUSH_ROWS", "many")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ingest.flush_rows") && stderr.contains("ALLOT__INGEST__FLUSH_ROWS"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_backfill_in_time_order_writes_one_file_per_tenant_day() {
    // 3 tenants × 4 days × 10 events, in time order, read in batches of 7 lines:
    // every tenant-day straddles batches and stays open across them.
    let work = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for day in 1..=4 {
        for n in 0..10 {
            for tenant in ["t1", "t2", "t3"] {
                let ts = format!("2026-03-0{day}T{:02}:00:00Z", n * 2);
                lines.push(event(
                    &format!("{tenant}-{day}-{n}"),
                    tenant,
                    &ts,
                    "compute_seconds",
                    "1.5",
                ));
            }
        }
    }
    let unique = lines.len();
    // Sent again while day 4 is open: an event of t1 on a committed day (so the
    // writer reads t1's days back from the lake), then events of the open day
    // from earlier batches, whose copies are not committed yet.
    let resent = [
        lines[3].clone(),
        lines[3 * 30].clone(),
        lines[3 * 30 + 3].clone(),
        lines[3 * 30 + 4].clone(),
    ];
    let at = 3 * 30 + 20;
    for (i, line) in resent.iter().enumerate() {
        lines.insert(at + i, line.clone());
    }
    let input = work.path().join("events.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let lake = work.path().join("lake");
    let run = || {
        let output = allot()
            .current_dir(work.path())
            .args(["ingest", "--from-file"])
            .arg(&input)
            .arg("--lake")
            .arg(&lake)
            .args(["--format", "json", "--stats"])
            .env("ALLOT__INGEST__BACKFILL_FLUSH_ROWS", "7")
            .output()
            .expect("run allot");
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "allot ingest failed: {stderr}");
        let summary: Value = serde_json::from_slice(&output.stdout).expect("JSON summary");
        (summary, stderr)
    };
    let (first, stats) = run();
    assert_eq!(first["accepted"], unique as u64, "{first}");
    assert_eq!(first["duplicates_skipped"], resent.len() as u64, "{first}");
    for stage in [
        "decode",
        "build",
        "dedup",
        "encode",
        "write",
        "commit",
        "process CPU",
    ] {
        assert!(stats.contains(stage), "--stats names {stage}: {stats}");
    }

    let rows = common::read_lake_table(&lake, "usage_events").await;
    assert_eq!(rows.len(), unique);
    let ids: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.columns["event_id"].as_deref())
        .collect();
    assert_eq!(ids.len(), unique, "each event once");
    let mut files_per_day: BTreeMap<String, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for row in &rows {
        let (dir, _) = row.file.rsplit_once('/').unwrap();
        files_per_day
            .entry(dir.to_string())
            .or_default()
            .insert(row.file.as_str());
    }
    assert_eq!(files_per_day.len(), 12);
    for (dir, files) in &files_per_day {
        assert_eq!(files.len(), 1, "{dir}: {files:?}");
    }

    let (again, _) = run();
    assert_eq!(again["accepted"], 0, "{again}");
    assert_eq!(again["duplicates_skipped"], lines.len() as u64, "{again}");
}

/// Backfills `input` from standard input (`--from-file -`); the JSON summary.
fn ingest_stdin(lake: &Path, input: &str) -> Value {
    let mut child = allot()
        .args([
            "ingest",
            "--no-progress",
            "--from-file",
            "-",
            "--format",
            "json",
        ])
        .arg("--lake")
        .arg(lake)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run allot");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON summary")
}

#[tokio::test]
async fn two_different_inputs_on_stdin_keep_all_their_rejections() {
    let work = tempfile::tempdir().unwrap();
    let lake = work.path().join("lake");
    let ok = event("e1", "acme", "2026-03-01T10:00:00Z", "compute_seconds", "1");
    // Both inputs are named `-` and rejected at lines 1 and 3, for different bytes.
    let first = format!(
        "not json\n{ok}\n{}\n",
        event(
            "n1",
            "acme",
            "2026-03-01T10:00:00Z",
            "compute_seconds",
            "-1"
        )
    );
    let second = format!(
        "also not json\n{ok}\n{}\n",
        event(
            "n2",
            "acme",
            "2026-03-01T10:00:00Z",
            "compute_seconds",
            "-2"
        )
    );

    let summary = ingest_stdin(&lake, &first);
    assert_eq!(
        (
            summary["rejected"].as_u64(),
            summary["rejected_already_recorded"].as_u64()
        ),
        (Some(2), Some(0)),
        "{summary}"
    );
    let summary = ingest_stdin(&lake, &second);
    assert_eq!(
        (
            summary["rejected"].as_u64(),
            summary["rejected_already_recorded"].as_u64()
        ),
        (Some(2), Some(0)),
        "{summary}"
    );
    // The same input again adds nothing.
    let summary = ingest_stdin(&lake, &first);
    assert_eq!(
        summary["rejected_already_recorded"].as_u64(),
        Some(2),
        "{summary}"
    );

    let rejected = common::read_lake_table(&lake, "rejected_events").await;
    let mut sources: Vec<String> = rejected
        .iter()
        .map(|row| row.columns["source"].clone().unwrap())
        .collect();
    sources.sort();
    assert_eq!(sources, ["file:-:1", "file:-:1", "file:-:3", "file:-:3"]);
}
