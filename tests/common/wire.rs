//! What the tests of SQL over the wire (docs/reference.md#sql-over-the-wire)
//! share, whichever wire they drive: a lake of three tenants and one with huge
//! quantities, its server's `[api]` keys, tokens minted by `allot token`, and
//! `allot sql`'s answers to hold the wires' answers to.

use super::CliLake;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The servers' signing secret.
pub const SECRET: &str = "a test secret that is long enough for HS256";
/// The tenants with ordinary events.
pub const TENANTS: [&str; 3] = ["t1", "t2", "t3"];
/// A quantity whose sum over three events (3·10²⁰) is past what 64-bit
/// mantissas and `rust_decimal` hold: it must come back to the last digit.
pub const WHALE_VALUE: &str = "99999999999999999999.123456789";
/// The sum of the tenant `whale`'s three events, to the last digit.
pub const WHALE_TOTAL: &str = "299999999999999999997.370370367";
/// The servers' `api.sql_memory`, in bytes.
pub const SQL_MEMORY: u64 = 64 << 20;
/// The servers' `api.sql_max_bytes`, in bytes.
pub const SQL_MAX_BYTES: u64 = 64 << 20;

/// The configuration of a lake served over a wire: the flat price book and the
/// `[api]` keys every wire test shares (a 4 s time limit, a 64 MiB memory cap),
/// then `listeners`: the wire's own keys.
pub fn config(lake: &CliLake, listeners: &str) -> String {
    format!(
        "{}\n[api]\njwt_secret = \"{SECRET}\"\naudit_log = \"{}\"\nrate_limit_per_s = 100000\n\
         clock_skew = \"0s\"\nsql_timeout = \"4s\"\nsql_memory = \"{}MiB\"\n\
         sql_max_bytes = \"{}MiB\"\n{listeners}",
        super::FLAT_PRICE_BOOK,
        lake.dir.path().join("audit.jsonl").display(),
        SQL_MEMORY >> 20,
        SQL_MAX_BYTES >> 20,
    )
}

/// A new lake configured by [`config`] with `listeners`, holding [`events`].
pub fn lake(listeners: &str) -> CliLake {
    let lake = CliLake::new("");
    std::fs::write(lake.config(), config(&lake, listeners)).unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let events = events(inputs.path());
    lake.ingest(&events);
    lake
}

/// Writes the events of `TENANTS` and of the tenant `whale`, whose quantities
/// are huge, to a file in `dir`; its path.
pub fn events(dir: &Path) -> PathBuf {
    let mut rng = super::Lcg(30);
    let mut text = String::new();
    for tenant in TENANTS {
        for i in 0..120 {
            let day = (rng.next() % 20 + 1) as u32;
            text.push_str(&super::synthetic_event(&mut rng, tenant, 5, day, i));
            text.push('\n');
        }
    }
    for i in 0..3 {
        text.push_str(&format!(
            r#"{{"event_id":"whale-{i}","tenant_id":"whale","ts":"2026-05-0{}T10:00:00Z","metric":"egress_bytes","value":{WHALE_VALUE},"resource":"r{i}"}}"#,
            i + 1
        ));
        text.push('\n');
    }
    let path = dir.join("events.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

/// A tenant token for `t2` minted by `allot token` with `config` and the
/// further arguments `args` (e.g. `--ttl 1s`).
pub fn mint(config: &Path, args: &[&str]) -> String {
    let minted = Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["token", "--role", "tenant", "--tenant", "t2", "--config"])
        .arg(config)
        .args(args)
        .output()
        .expect("run allot token");
    assert!(minted.status.success(), "{minted:?}");
    String::from_utf8(minted.stdout).unwrap().trim().to_string()
}

/// A tenant token for `t2` signed with another issuer's secret: well formed,
/// and refused by every server of these tests.
pub fn foreign_token() -> String {
    let foreign =
        CliLake::new("[api]\njwt_secret = \"another issuer's secret, long enough for HS256\"\n");
    mint(&foreign.config(), &[])
}

/// `allot sql --tenant T` (or for every tenant): the rows as text.
pub fn cli_sql(lake: &CliLake, tenant: Option<&str>, sql: &str) -> Vec<Vec<String>> {
    let mut args = vec!["sql", "--format", "csv"];
    if let Some(tenant) = tenant {
        args.extend(["--tenant", tenant]);
    }
    args.push(sql);
    let output = lake.run(&args);
    assert!(output.status.success(), "allot {args:?}: {output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').map(str::to_string).collect())
        .collect()
}

/// How many of `tenant`'s events count, by `allot sql --tenant`.
pub fn own_count_of(lake: &CliLake, tenant: &str) -> usize {
    cli_sql(lake, Some(tenant), "SELECT count(*) FROM usage_events")[0][0]
        .parse()
        .unwrap()
}

/// The audit log's entries of the wire `method` (`FLIGHT`, `PG`), after
/// asserting that they hold a refused bad signature, a refused expired token
/// and a refused finance token.
pub fn audited_refusals(lake: &CliLake, method: &str) -> Vec<serde_json::Value> {
    let audit = std::fs::read_to_string(lake.dir.path().join("audit.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|entry: &serde_json::Value| entry["method"] == method)
        .collect();
    for reason in ["bad_signature", "expired"] {
        assert!(
            entries
                .iter()
                .any(|e| e["outcome"] == "unauthenticated" && e["reason"] == reason),
            "{reason}: {audit}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["outcome"] == "forbidden" && e["role"] == "finance"),
        "{audit}"
    );
    entries
}

/// The value of the counter `series` (a name with its labels) in the
/// Prometheus text `metrics`; 0 when it is not there.
pub fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

/// Asserts that the wire client's record `seen[key]` is a refusal whose
/// message says at least one of `needles`.
pub fn assert_refused(seen: &serde_json::Value, key: &str, needles: &[&str]) {
    let message = seen[key].as_str().unwrap_or_default();
    assert!(
        needles.iter().any(|needle| message.contains(needle)),
        "{key}: {} does not say any of {needles:?}",
        seen[key]
    );
}
