//! The meter kinds `max`, `unique_count` and `latest`
//! (docs/reference.md#other-meter-kinds) end to end: DuckDB, reading the lake's
//! active files on its own, finds the same figure for every tenant and metric
//! as allot's invoice, raw and from the rollups; rollups written before the
//! meters existed still read and are rebuilt with the meters' columns; a
//! `unique_count` month past its bound is refused, never estimated; and every
//! bad meter setting is refused at start with exit status 2 naming the key.
//! (The hand-worked figures are the golden case `meter_kinds`.)

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use allot_schemas::table_schema::HOURLY_COLUMNS_ADDED_LATER;

/// Three meter metrics and a counter, priced flat, so that each invoice line's
/// quantity is the figure of its (tenant, metric).
const CONFIG: &str = r#"
currency = "USD"

[metrics.peak_connections]
kind = "max"
unit = "connection"
divisor = "1"

[metrics.active_users]
kind = "unique_count"
field = "labels.user"
unit = "user"
divisor = "1"

[metrics.hosts]
kind = "unique_count"
field = "resource"
unit = "host"
divisor = "1"

[metrics.plan_seats]
kind = "latest"
unit = "seat"
divisor = "1"

[metrics.api_calls]
kind = "counter"
unit = "call"
divisor = "1"

[[rates]]
metric = "peak_connections"
effective_from = "2026-01-01"
unit_price = "0.50"

[[rates]]
metric = "active_users"
effective_from = "2026-01-01"
unit_price = "3.00"

[[rates]]
metric = "hosts"
effective_from = "2026-01-01"
unit_price = "1.00"

[[rates]]
metric = "plan_seats"
effective_from = "2026-01-01"
unit_price = "10.00"

[[rates]]
metric = "api_calls"
effective_from = "2026-01-01"
unit_price = "0.01"
"#;

/// The meters of [`CONFIG`] as `meter_check.py` takes them.
const METERS: [&str; 4] = [
    "peak_connections:max",
    "active_users:unique_count:labels.user",
    "hosts:unique_count:resource",
    "plan_seats:latest",
];

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8")
}

/// Events of February to April 2026 for three tenants: every metric on random
/// days and hours (whole days without any), values with decimals, users and
/// hosts from small pools (some events without a user), `ts` ties broken by
/// `event_id`, and re-sent ids that must count once.
fn events(rng: &mut common::Lcg, prefix: &str) -> String {
    let mut lines = Vec::new();
    for (t, tenant) in ["alpha", "bravo", "charlie"].iter().enumerate() {
        for i in 0..(60 + 20 * t) {
            let month = 2 + rng.next() % 3;
            let day = 1 + rng.next() % 28;
            let hour = rng.next() % 24;
            // Few distinct minutes, so that several events share a `ts`.
            let minute = rng.next() % 2;
            let value = format!("{}.{:03}", rng.next() % 500, rng.next() % 1000);
            let (metric, extra) = match rng.next() % 5 {
                0 => ("peak_connections", String::new()),
                1 => match rng.next() % 4 {
                    0 => ("active_users", String::new()),
                    n => (
                        "active_users",
                        format!(r#","labels":{{"user":"u{}","n":"{n}"}}"#, rng.next() % 9),
                    ),
                },
                2 => ("hosts", format!(r#","resource":"h{}""#, rng.next() % 6)),
                3 => ("plan_seats", String::new()),
                _ => ("api_calls", String::new()),
            };
            let id = format!("{prefix}{t}-{}", i % (50 + 20 * t));
            lines.push(format!(
                r#"{{"event_id":"{id}","tenant_id":"{tenant}","ts":"2026-{month:02}-{day:02}T{hour:02}:{minute:02}:00Z","metric":"{metric}","value":{value}{extra}}}"#
            ));
        }
    }
    lines.join("\n") + "\n"
}

/// The invoice's quantity per (tenant, metric) of the meters: one flat rate,
/// so one line each.
fn invoice_figures(lake: &common::CliLake, month: &str) -> BTreeMap<String, String> {
    let invoice = stdout(&lake.run(&["invoice", "--month", month]));
    let mut figures = BTreeMap::new();
    for line in invoice.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if METERS
            .iter()
            .any(|m| m.split(':').next() == Some(fields[2]))
        {
            let key = format!("{},{}", fields[0], fields[2]);
            assert!(
                figures.insert(key, fields[8].to_string()).is_none(),
                "{invoice}"
            );
        }
    }
    figures
}

fn duckdb_figures(lake: &Path, month: &str) -> BTreeMap<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/meter_check.py");
    let output = Command::new(common::test_python())
        .arg(script)
        .arg(lake)
        .arg(month)
        .args(METERS)
        .output()
        .expect("run meter_check.py");
    stdout(&output)
        .lines()
        .map(|line| {
            let (key, figure) = line.rsplit_once(',').expect("tenant,metric,figure");
            (key.to_string(), figure.to_string())
        })
        // No distinct value makes no invoice line.
        .filter(|(_, figure)| figure != "0.000000000000")
        .collect()
}

#[test]
fn duckdb_finds_the_same_meter_figures_raw_and_from_rollups() {
    let lake = common::CliLake::new(CONFIG);
    let mut rng = common::Lcg(7);
    for (part, prefix) in ["a", "b"].iter().enumerate() {
        let file = lake.dir.path().join(format!("events-{part}.jsonl"));
        std::fs::write(&file, events(&mut rng, prefix)).unwrap();
        lake.ingest(&file);
    }
    let mut raw = BTreeMap::new();
    for month in ["2026-02", "2026-03", "2026-04"] {
        let ours = invoice_figures(&lake, month);
        let theirs = duckdb_figures(&lake.root(), month);
        // Nearly every tenant used every meter in every month.
        assert!(theirs.len() >= 9, "{month}: {theirs:?}");
        assert_eq!(ours, theirs, "{month}");
        raw.insert(month, ours);
    }
    stdout(&lake.run(&["compact"]));
    let check = stdout(&lake.run(&["verify", "--rollups", "--sample", "0"]));
    assert!(check.starts_with("verified"), "{check}");
    for month in ["2026-02", "2026-03", "2026-04"] {
        assert_eq!(
            invoice_figures(&lake, month),
            raw[month],
            "{month} from rollups"
        );
    }
}

/// Events of March 2026 for the rollup tests: a peak, users, a last value.
const MARCH: &str = r#"{"event_id":"p1","tenant_id":"acme","ts":"2026-03-02T10:00:00Z","metric":"peak_connections","value":40}
{"event_id":"p2","tenant_id":"acme","ts":"2026-03-09T10:00:00Z","metric":"peak_connections","value":75}
{"event_id":"u1","tenant_id":"acme","ts":"2026-03-02T10:00:00Z","metric":"active_users","value":1,"labels":{"user":"ann"}}
{"event_id":"u2","tenant_id":"acme","ts":"2026-03-09T11:00:00Z","metric":"active_users","value":1,"labels":{"user":"bob"}}
{"event_id":"s1","tenant_id":"acme","ts":"2026-03-09T12:00:00Z","metric":"plan_seats","value":4}
{"event_id":"c1","tenant_id":"acme","ts":"2026-03-09T12:00:00Z","metric":"api_calls","value":100}
{"event_id":"g1","tenant_id":"gone","ts":"2026-03-09T12:00:00Z","metric":"peak_connections","value":5}
"#;

/// The meters' configuration from before they existed: every metric a counter.
fn as_counters(config: &str) -> String {
    config
        .lines()
        .filter(|line| !line.starts_with("field = "))
        .map(|line| match line {
            "kind = \"max\"" | "kind = \"unique_count\"" | "kind = \"latest\"" => {
                "kind = \"counter\""
            }
            other => other,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn rollups_written_before_the_meters_still_read_and_are_rebuilt_with_them() {
    // A lake whose rollups were computed while every metric was a counter,
    // then stripped of the meters' columns: as a lake of an older allot.
    let lake = common::CliLake::new(&as_counters(CONFIG));
    let events = lake.dir.path().join("march.jsonl");
    std::fs::write(&events, MARCH).unwrap();
    lake.ingest(&events);
    stdout(&lake.run(&["compact"]));
    let counted = stdout(&lake.run(&["invoice", "--month", "2026-03"]));
    let hourly = lake.root().join("usage_hourly");
    common::drop_columns(&hourly, &HOURLY_COLUMNS_ADDED_LATER);
    // The old rollups read as they did (their basis is unchanged), and a
    // tenant sharing their files can still be erased from them.
    assert_eq!(
        stdout(&lake.run(&["invoice", "--month", "2026-03"])),
        counted
    );
    stdout(&lake.run(&["tenant", "delete", "gone", "--confirm", "gone"]));
    let counted: String = counted
        .lines()
        .filter(|line| !line.starts_with("gone,"))
        .map(|line| format!("{line}\n"))
        .collect();
    assert_eq!(
        stdout(&lake.run(&["invoice", "--month", "2026-03"])),
        counted
    );
    assert!(counted.contains(",peak_connections,connection,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,,,115.000000000000,0.50,57.50,"), "{counted}");

    // Now the meters: the old rollups' basis no longer holds, so the events
    // are read raw until compaction rebuilds the rollups with their columns.
    std::fs::write(lake.config(), CONFIG).unwrap();
    let metered = stdout(&lake.run(&["invoice", "--month", "2026-03"]));
    for line in [
        ",active_users,user,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,,,2.000000000000,3.00,6.00,",
        ",peak_connections,connection,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,,,75.000000000000,0.50,37.50,",
        ",plan_seats,seat,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,,,4.000000000000,10.00,40.00,",
        ",api_calls,call,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,,,100.000000000000,0.01,1.00,",
    ] {
        assert!(metered.contains(line), "{line} in {metered}");
    }
    let out = lake.run(&["compact"]);
    let summary = String::from_utf8_lossy(&out.stderr).to_string() + &stdout(&out);
    assert!(
        summary.contains("rollups of 2 tenant-days refreshed"),
        "{summary}"
    );
    let check = stdout(&lake.run(&["verify", "--rollups", "--sample", "0"]));
    assert!(check.starts_with("verified: 2 of 2"), "{check}");
    assert_eq!(
        stdout(&lake.run(&["invoice", "--month", "2026-03"])),
        metered
    );
    // The table's schema gained the columns, and the new files hold them.
    let newest = common::data_files(&hourly)
        .into_iter()
        .max_by_key(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .unwrap();
    let batch = &common::read_parquet(&newest)[0];
    for column in HOURLY_COLUMNS_ADDED_LATER {
        assert!(batch.column_by_name(column).is_some(), "{column}");
    }
}

#[test]
fn a_month_with_more_distinct_values_than_the_bound_is_refused() {
    let bounded = CONFIG.replace(
        "field = \"labels.user\"",
        "field = \"labels.user\"\nmax_distinct = 1",
    );
    let lake = common::CliLake::new(&bounded);
    let events = lake.dir.path().join("march.jsonl");
    std::fs::write(&events, MARCH).unwrap();
    lake.ingest(&events);
    // Two users on two days: each day alone is within the bound, the month
    // is not; raw and from the rollups alike.
    for step in ["raw", "rolled up"] {
        let out = lake.run(&["invoice", "--month", "2026-03"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{step}: {err}");
        assert!(
            err.contains("active_users has more than 1 distinct values")
                && err.contains("metrics.active_users.max_distinct")
                && err.trim().lines().count() == 1,
            "{step}: {err}"
        );
        stdout(&lake.run(&["compact"]));
    }
    // With room for both, the month bills both.
    std::fs::write(
        lake.config(),
        bounded.replace("max_distinct = 1", "max_distinct = 2"),
    )
    .unwrap();
    let invoice = stdout(&lake.run(&["invoice", "--month", "2026-03"]));
    assert!(invoice.contains(",active_users,user,2026-03-01T00:00:00Z,2026-04-01T00:00:00Z,,,2.000000000000,3.00,6.00,"), "{invoice}");
}

#[test]
fn bad_meter_configuration_is_refused_with_exit_2_naming_the_key() {
    let metric = |body: &str| format!("[metrics.m]\nunit = \"u\"\ndivisor = \"1\"\n{body}\n");
    let cases = [
        (metric("kind = \"unique_count\""), "metrics.m.field"),
        (
            metric("kind = \"unique_count\"\nfield = \"labels.\""),
            "metrics.m.field",
        ),
        (
            metric("kind = \"unique_count\"\nfield = \"event_id\""),
            "metrics.m.field",
        ),
        (
            metric("kind = \"max\"\nfield = \"region\""),
            "metrics.m.field",
        ),
        (
            metric("kind = \"latest\"\nfield = \"labels.user\""),
            "metrics.m.field",
        ),
        (
            metric("kind = \"counter\"\nfield = \"region\""),
            "metrics.m.field",
        ),
        (metric("kind = \"latest\"\nhold = \"1h\""), "metrics.m.hold"),
        (
            metric("kind = \"unique_count\"\nfield = \"region\"\nmax_distinct = 0"),
            "metrics.m.max_distinct",
        ),
        (
            metric("kind = \"max\"\nmax_distinct = 10"),
            "metrics.m.max_distinct",
        ),
        (metric("kind = \"peak\""), "metrics.m.kind"),
        (
            metric("kind = \"max\"")
                + "[[rates]]\nmetric = \"m\"\neffective_from = \"2026-01-01\"\n\
                   unit_price = \"1\"\nmatch = { service = \"gpu\" }\n",
            "rates[0].match.service",
        ),
    ];
    for (text, key) in cases {
        let lake = common::CliLake::new(&text);
        for command in [
            &["invoice", "--month", "2026-03"][..],
            &["serve", "--listen", "127.0.0.1:0"][..],
        ] {
            let out = lake.run(command);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command:?} {text}: {err}");
            assert!(
                err.contains(key) && err.trim().lines().count() == 1,
                "{command:?} {text}: {err}"
            );
        }
    }
}

/// acme's usage series of the golden case `meter_kinds` for March, a point a
/// day, as CSV: each day's own figure.
async fn golden_usage_series(lake: &Path, use_rollups: bool) -> String {
    use allot_query::reports::{ReportSettings, usage_series};
    use allot_query::request::{RawUsageRequest, UsageRequest};
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/meter_kinds");
    let text = std::fs::read_to_string(case.join("allot.toml")).unwrap();
    let config = allot_schemas::config::Config::from_toml_str(&text, "allot.toml", []).unwrap();
    let settings = ReportSettings {
        use_rollups,
        ..ReportSettings::new(config)
    };
    let location = allot_query::LakeLocation::parse(lake.to_str().unwrap()).unwrap();
    let snapshot = allot_lake::snapshot::LakeSnapshot::load(&location)
        .await
        .unwrap();
    let request = UsageRequest::try_from(RawUsageRequest {
        tenant: "acme".parse().unwrap(),
        from: Some("2026-03-01T00:00:00Z".to_string()),
        to: Some("2026-04-01T00:00:00Z".to_string()),
        bucket: Some("1d".to_string()),
        metric: None,
        now: 0,
    })
    .unwrap();
    let points = usage_series(&snapshot, &settings, &request).await.unwrap();
    allot_query::render::usage_table(&points).to_csv()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_usage_series_shows_each_buckets_own_figure() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/meter_kinds");
    let lake = common::CliLake::new(&std::fs::read_to_string(case.join("allot.toml")).unwrap());
    let events = case.join("events.jsonl");
    lake.ingest(&events);
    // Worked by hand from the case's events: the users of each day (none on
    // 03-14, whose event has no user), each day's peak, each day's last value.
    let point = |metric: &str, unit: &str, day: &str, figure: &str| {
        format!(
            "{metric},{unit},2026-03-{day}T00:00:00Z,{figure}.000000000000,{figure}.000000000000\n"
        )
    };
    let mut expected = "metric,unit,bucket_start,raw,quantity\n".to_string();
    for (day, users) in [
        ("01", "1"),
        ("05", "2"),
        ("17", "1"),
        ("20", "1"),
        ("25", "1"),
        ("31", "1"),
    ] {
        expected += &point("active_users", "user", day, users);
    }
    expected += &point("peak_connections", "connection", "02", "40");
    expected +=
        "peak_connections,connection,2026-03-10T00:00:00Z,75.500000000000,75.500000000000\n";
    expected +=
        "peak_connections,connection,2026-03-20T00:00:00Z,75.500000000000,75.500000000000\n";
    expected += &point("peak_connections", "connection", "31", "60");
    expected += &point("plan_seats", "seat", "03", "5");
    expected += &point("plan_seats", "seat", "28", "8");
    assert_eq!(golden_usage_series(&lake.root(), false).await, expected);
    stdout(&lake.run(&["compact"]));
    assert_eq!(golden_usage_series(&lake.root(), true).await, expected);
}
