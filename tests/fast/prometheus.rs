//! The Prometheus alerting rules allot ships (`dashboards/prometheus/`,
//! docs/operating.md#alerting-on-allot): Prometheus loads them (`promtool check
//! rules`), each alert fires on the series of its unit tests and stays quiet on
//! the close ones beside them (`promtool test rules`), and every metric they
//! name is one that allot exports.

use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::promtool::promtool;

/// The folder of the rules and their unit tests.
fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards/prometheus")
}

/// Runs `promtool ARGS` in the rules' folder and panics, quoting it, on failure.
fn promtool_succeeds(args: &[&str]) -> String {
    let output = promtool(&rules_dir(), args, "");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?}:\n{said}");
    said
}

#[test]
fn prometheus_loads_the_alerting_rules() {
    let said = promtool_succeeds(&["check", "rules", "allot-rules.yml"]);
    assert!(said.contains("SUCCESS: 9 rules found"), "{said}");
}

#[test]
fn each_alert_fires_on_its_unit_tests_series_and_only_there() {
    let said = promtool_succeeds(&["test", "rules", "allot-rules.test.yml"]);
    assert!(said.contains("SUCCESS"), "{said}");
    // Every alert of the rules has a case in which it fires.
    let rules = std::fs::read_to_string(rules_dir().join("allot-rules.yml")).unwrap();
    let tests = std::fs::read_to_string(rules_dir().join("allot-rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 9, "{alerts:?}");
    for alert in alerts {
        let fires = tests
            .split("alertname: ")
            .skip(1)
            .any(|case| case.starts_with(alert) && case.contains("exp_labels"));
        assert!(fires, "no unit test in which {alert} fires");
    }
}

/// Every name made of `allot_` and lower-case letters, digits and underscores
/// in `text`, with a histogram's `_bucket`, `_sum` and `_count` taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("allot_") {
        let preceded = text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if preceded {
            continue;
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}

#[test]
fn the_alerting_rules_name_only_metrics_allot_exports() {
    use allot_api::{alerts, cache, flight_sql, lake_view, metrics};
    use allot_ingest::telemetry as collector;
    use allot_lake::telemetry as compaction;
    let exported: BTreeSet<&str> = [
        collector::EVENTS_ACCEPTED,
        collector::EVENTS_REJECTED,
        collector::DUPLICATES_DROPPED,
        collector::FLUSH_DURATION,
        collector::DELTA_COMMITS,
        collector::ROWS_FLUSHED,
        collector::BYTES_FLUSHED,
        collector::CONSUMER_LAG,
        collector::BUFFERED_BYTES,
        collector::DEAD_LETTERS,
        compaction::COMPACTION_RUNS,
        compaction::COMPACTION_PARTITIONS,
        compaction::COMPACTION_FILES_REMOVED,
        compaction::COMPACTION_FILES_ADDED,
        compaction::COMPACTION_DUPLICATES_REMOVED,
        compaction::COMPACTION_CONFLICTS,
        compaction::COMPACTION_SKIPPED,
        metrics::HTTP_REQUESTS,
        metrics::HTTP_DURATION,
        lake_view::LAKE_REFRESH_SECONDS,
        lake_view::LAKE_VERSION,
        lake_view::LAKE_REFRESHED_AT,
        cache::REPORT_COMPUTATIONS,
        cache::REPORT_CACHE_HITS,
        cache::REPORT_CACHE_BYTES,
        flight_sql::FLIGHT_STATEMENTS,
        flight_sql::FLIGHT_BYTES,
        flight_sql::FLIGHT_REFUSED,
        alerts::ALERTS_FIRING,
        alerts::ALERT_DELIVERIES,
    ]
    .into_iter()
    .collect();
    let rules = std::fs::read_to_string(rules_dir().join("allot-rules.yml")).unwrap();
    let named = metric_names(&rules);
    let unknown: Vec<&String> = named
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "the rules name metrics allot does not export: {unknown:?}"
    );
    // What the rules watch, each read from the metric that measures it.
    for needed in [
        collector::CONSUMER_LAG,
        collector::DEAD_LETTERS,
        collector::EVENTS_REJECTED,
        collector::DELTA_COMMITS,
        lake_view::LAKE_REFRESHED_AT,
        metrics::HTTP_REQUESTS,
        alerts::ALERT_DELIVERIES,
    ] {
        assert!(named.contains(needed), "no rule reads {needed}");
    }
}
