//! Golden tests of the reports: hand-made lakes under `tests/golden/<case>/` whose
//! expected output was worked out by hand from docs/reference.md (see each case's
//! `NOTES.md`), never produced by allot. Each case's event files are ingested
//! with `allot ingest --from-file` into a fresh lake, then every `<name>.args`
//! command runs against it and must print `<name>.expected.csv` byte for byte, or
//! fail with exit status 2 and a message containing `<name>.expected-error`, or
//! (a step such as `close` or a late `ingest`, `<name>.expected-ok`) just
//! succeed. Commands run in name order on the one lake, so a case can close a
//! month, ingest late events and read the invoices again.

use std::path::{Path, PathBuf};
use std::process::Command;

fn allot() -> Command {
    Command::new(env!("CARGO_BIN_EXE_allot"))
}

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// `events.jsonl` first, then `events-N.jsonl` by N.
fn event_files(case: &Path) -> Vec<PathBuf> {
    let mut numbered: Vec<(u32, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(case).expect("read case dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name == "events.jsonl" {
            numbered.push((1, path));
        } else if let Some(n) = name
            .strip_prefix("events-")
            .and_then(|rest| rest.strip_suffix(".jsonl"))
            .and_then(|n| n.parse().ok())
        {
            numbered.push((n, path));
        }
    }
    numbered.sort();
    numbered.into_iter().map(|(_, path)| path).collect()
}

fn commands(case: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = std::fs::read_dir(case)
        .expect("read case dir")
        .map(|e| e.expect("dir entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().to_string();
            let stem = name.strip_suffix(".args")?.to_string();
            Some((stem, path))
        })
        .collect();
    found.sort();
    found
}

/// Runs one case; returns a description of every mismatch.
fn run_case(case: &Path) -> Vec<String> {
    let name = case.file_name().unwrap().to_string_lossy().to_string();
    let lake = tempfile::tempdir().expect("temp lake");
    let config = case.join("allot.toml");
    for events in event_files(case) {
        let output = allot()
            .args(["ingest", "--no-progress", "--from-file"])
            .arg(&events)
            .arg("--lake")
            .arg(lake.path())
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run allot ingest");
        assert!(
            output.status.success(),
            "{name}: ingest of {} failed: {}",
            events.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let mut failures = Vec::new();
    for (command, args_file) in commands(case) {
        let line = std::fs::read_to_string(&args_file).expect("read args");
        let case_dir = case.to_string_lossy();
        let args: Vec<String> = line
            .split_whitespace()
            .map(|a| a.replace("{case}", &case_dir))
            .collect();
        let output = allot()
            .args(&args)
            .arg("--lake")
            .arg(lake.path())
            .arg("--config")
            .arg(&config)
            .output()
            .expect("run allot");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected_csv = case.join(format!("{command}.expected.csv"));
        let expected_error = case.join(format!("{command}.expected-error"));
        let expected_ok = case.join(format!("{command}.expected-ok"));
        if expected_ok.exists() {
            if !output.status.success() {
                failures.push(format!(
                    "{name}/{command}: exit {:?}: {stderr}",
                    output.status.code()
                ));
            }
        } else if expected_csv.exists() {
            let expected = std::fs::read_to_string(&expected_csv).expect("read expected");
            if !output.status.success() {
                failures.push(format!(
                    "{name}/{command}: exit {:?}: {stderr}",
                    output.status.code()
                ));
            } else if stdout != expected {
                failures.push(format!(
                    "{name}/{command}: output differs\n--- expected\n{expected}--- got\n{stdout}"
                ));
            }
        } else if expected_error.exists() {
            let expected = std::fs::read_to_string(&expected_error).expect("read expected");
            let expected = expected.trim_end();
            if output.status.code() != Some(2) {
                failures.push(format!(
                    "{name}/{command}: expected exit 2, got {:?} (stdout {stdout})",
                    output.status.code()
                ));
            } else if !stderr.contains(expected) {
                failures.push(format!(
                    "{name}/{command}: stderr {stderr:?} does not contain {expected:?}"
                ));
            } else if stderr.trim_end().lines().count() != 1 {
                failures.push(format!(
                    "{name}/{command}: the error must be one line: {stderr:?}"
                ));
            }
        } else {
            failures.push(format!("{name}/{command}: no expected output file"));
        }
    }
    failures
}

#[test]
fn golden_reports_match_the_hand_worked_outputs() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(golden_root())
        .expect("tests/golden exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.join("allot.toml").exists())
        .collect();
    cases.sort();
    assert!(cases.len() >= 13, "golden cases missing: {cases:?}");
    let failures: Vec<String> = cases.iter().flat_map(|case| run_case(case)).collect();
    assert!(
        failures.is_empty(),
        "{} golden mismatches:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
