//! Alerts end to end (docs/reference.md#alerts): `allot serve` evaluating a
//! quota rule after each lake refresh and posting to a real HTTP receiver on
//! 127.0.0.1 inside the test. Each notice is counted by its idempotency key:
//! one firing per crossing, one resolution, none repeated across a kill -9
//! between commit and delivery or across two replicas on one lake, and a dead
//! endpoint retried without holding up the other channel. An erased tenant's
//! alerts go with it, and nothing more is sent about it. A new month, on the
//! clock of a runner in the test, resolves a month-to-date quota alert.

use crate::common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use allot_api::alerts::{AlertBoard, AlertRunner, FactSource};
use allot_api::lake_view::LakeView;
use allot_lake::compact::log_table::ABORT_BEFORE_COMMIT_ENV;
use allot_lake::snapshot::LakeSnapshot;
use allot_query::LakeLocation;
use allot_query::alerts::store::COMPACT_AFTER_COMMITS;
use allot_query::alerts::{
    AlertLog, AlertRecord, AlertState, AlertStore, AttemptDetails, DeliveryOutcome, NewNotice,
    Notice,
};
use allot_query::health::{HealthStatus, TenantHealth};
use allot_query::live_health::{LiveFacts, LiveHealth};
use allot_query::reports::ReportSettings;
use allot_schemas::clock::{Clock, FixedClock};
use allot_schemas::config::Config;
use common::alerts::{
    ARRIVES_WITHIN, HOOK_SECRET, Receiver, alert_lake, alert_lake_with, alerts_of, assert_signed,
    by_key, use_compute, use_compute_at, webhook,
};
use common::{CliLake, ServeProcess};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const NO_ENV: [(String, String); 0] = [];
#[test]
fn a_quota_crossing_fires_once_and_resolves_once() {
    let receiver = Receiver::start();
    let lake = alert_lake(&webhook("hook", &receiver.url("hook")), "\"hook\"");
    // 899.999 of 1000 before the server starts: under 90 %, nothing to send.
    use_compute(&lake, "acme", "a1", "899.999");
    let server = ServeProcess::start(&lake.config(), Some(&lake.root()));
    server.wait_ready(ARRIVES_WITHIN);
    std::thread::sleep(Duration::from_secs(2));
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());

    // 0.001 more: exactly 90 %, one firing, signed, with the figure and threshold.
    use_compute(&lake, "acme", "a2", "0.001");
    let got = receiver.wait_for("the firing", |r| !r.is_empty());
    let firing = &got[0];
    assert_eq!(firing.path, "/hook");
    assert_signed(firing);
    let body = firing.json();
    assert_eq!(body["rule"], "q90");
    assert_eq!(body["kind"], "quota");
    assert_eq!(body["tenant_id"], "acme");
    assert_eq!(body["state"], "firing");
    assert_eq!(body["value"], "90.00");
    assert_eq!(body["threshold"], "90");
    assert_eq!(body["key"], "q90/acme/1");
    assert!(body["lake_version"].as_u64().is_some(), "{body}");
    assert!(body["as_of"].as_str().unwrap().ends_with('Z'), "{body}");

    // More usage, and a few refreshes: nothing new.
    use_compute(&lake, "acme", "a3", "50");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        by_key(&receiver.received()),
        BTreeMap::from([("q90/acme/1".to_string(), 1)])
    );

    // The API lists it, delivered; a tenant token sees only its own tenant's.
    let finance = server.token("finance", None);
    let (status, listed) = server.request("GET /v1/alerts", &finance, "");
    assert_eq!(status, 200, "{listed}");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let alert = &listed["alerts"][0];
    assert_eq!(alert["key"], "q90/acme/1");
    assert_eq!(alert["current"], true);
    let delivered = |alert: &Value| alert["deliveries"][0]["outcome"] == "delivered";
    let deadline = Instant::now() + ARRIVES_WITHIN;
    while !delivered(&alerts_of(&server, &finance)[0]) {
        assert!(Instant::now() < deadline, "the delivery is not recorded");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(alerts_of(&server, &server.token("tenant", Some("beta"))).is_empty());
    assert_eq!(
        alerts_of(&server, &server.token("tenant", Some("acme"))).len(),
        1
    );
    let (status, _) = server.request(
        "GET /v1/alerts?tenant=acme",
        &server.token("tenant", Some("beta")),
        "",
    );
    assert_eq!(status, 404);
    let (_, metrics) = server.request("GET /metrics", "", "");
    assert!(
        metrics.contains("allot_alerts_firing{rule=\"q90\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("allot_alert_deliveries_total{channel=\"hook\",outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    // The alert series are as Prometheus expects them, help texts included.
    common::promtool::assert_promtool_accepts_metrics(&metrics);

    // The quota raised to 10000 (read at the restart): 950 is 9.5 %, one
    // resolution.
    drop(server);
    let config = std::fs::read_to_string(lake.config()).unwrap().replacen(
        "[tenants.acme]\nquotas = { compute_seconds = \"1000\" }",
        "[tenants.acme]\nquotas = { compute_seconds = \"10000\" }",
        1,
    );
    assert!(config.contains("\"10000\""), "{config}");
    std::fs::write(lake.config(), config).unwrap();
    let server = ServeProcess::start(&lake.config(), Some(&lake.root()));
    server.wait_ready(ARRIVES_WITHIN);
    let got = receiver.wait_for("the resolution", |r| r.len() >= 2);
    let resolved = &got[1];
    assert_signed(resolved);
    assert_eq!(resolved.json()["state"], "resolved");
    assert_eq!(resolved.json()["value"], "9.50");
    assert_eq!(resolved.key(), "q90/acme/2");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.received().len(), 2);

    // The tenant erased while the server runs: its alerts go with it (the
    // server reads the table again), and nothing more is sent about it.
    let finance = server.token("finance", None);
    let out = lake.run(&["tenant", "delete", "acme", "--confirm", "acme"]);
    assert!(out.status.success(), "{out:?}");
    let deadline = Instant::now() + ARRIVES_WITHIN;
    while !alerts_of(&server, &finance).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the erased tenant's alerts are listed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.received().len(), 2);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rows = runtime.block_on(common::read_lake_table(&lake.root(), "alerts"));
    assert!(
        rows.iter()
            .all(|row| !row.columns["key"].as_deref().unwrap().contains("/acme/")),
        "{rows:?}"
    );
}

/// `allot alerts run`'s runner, in this process, on a clock the test moves.
struct RunnerOnClock {
    clock: Arc<FixedClock>,
    cancel: CancellationToken,
    /// Runs the runner's tasks; dropped, it ends them.
    _runtime: tokio::runtime::Runtime,
}

impl RunnerOnClock {
    fn start(lake: &CliLake, at: &str) -> RunnerOnClock {
        let config = Config::load(Some(&lake.config()), NO_ENV).unwrap();
        let location = LakeLocation::parse(lake.root().to_str().unwrap()).unwrap();
        let clock = Arc::new(FixedClock::new(micros(at)));
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let cancel = CancellationToken::new();
        let shared: Arc<dyn Clock> = Arc::clone(&clock) as Arc<dyn Clock>;
        let runner = runtime
            .block_on(AlertRunner::open(
                &config,
                &location,
                Arc::new(AlertBoard::default()),
                Arc::clone(&shared),
            ))
            .unwrap()
            .expect("the configuration has rules");
        let source = FactSource::alone(
            Arc::new(LakeView::new(
                location,
                config.api.refresh_interval.0,
                shared,
            )),
            Arc::new(ReportSettings::new(config)),
        );
        runtime.spawn(runner.run(source, cancel.clone()));
        RunnerOnClock {
            clock,
            cancel,
            _runtime: runtime,
        }
    }
}

impl Drop for RunnerOnClock {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn micros(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp_micros()
}

#[test]
fn a_new_month_resolves_a_quota_firing_once() {
    // The runner's clock is fixed on 20 November; the events are of that day.
    let receiver = Receiver::start();
    let lake = alert_lake_with(
        &webhook("hook", &receiver.url("hook")),
        "\"hook\"",
        "evaluate_every = \"200ms\"",
    );
    use_compute_at(&lake, "acme", "n1", "899", "2026-11-20T09:00:00Z");
    let runner = RunnerOnClock::start(&lake, "2026-11-20T12:00:00Z");
    std::thread::sleep(Duration::from_secs(2));
    assert!(receiver.received().is_empty(), "{:?}", receiver.received());

    // 950 of 1000: one firing, signed.
    use_compute_at(&lake, "acme", "n2", "51", "2026-11-20T10:00:00Z");
    let got = receiver.wait_for("the firing", |r| !r.is_empty());
    assert_signed(&got[0]);
    let body = got[0].json();
    assert_eq!(
        (&body["state"], &body["value"], &body["key"]),
        (&"firing".into(), &"95.00".into(), &"q90/acme/1".into())
    );
    assert_eq!(body["as_of"], "2026-11-20T12:00:00Z");

    // More usage, and many evaluations later the same day: nothing new.
    use_compute_at(&lake, "acme", "n3", "40", "2026-11-20T11:00:00Z");
    runner.clock.set(micros("2026-11-20T12:30:00Z"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        by_key(&receiver.received()),
        BTreeMap::from([("q90/acme/1".to_string(), 1)])
    );

    // December: nothing used this month yet, so the quota use is 0 %; one
    // resolution, and no more after further evaluations.
    runner.clock.set(micros("2026-12-01T00:00:01Z"));
    let got = receiver.wait_for("the resolution", |r| r.len() >= 2);
    assert_signed(&got[1]);
    let body = got[1].json();
    assert_eq!(body["state"], "resolved", "{body}");
    assert_eq!(body["key"], "q90/acme/2");
    assert_eq!(body["value"], "0.00", "{body}");
    assert_eq!(body["as_of"], "2026-12-01T00:00:01Z");
    runner.clock.set(micros("2026-12-01T06:00:00Z"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        by_key(&receiver.received()),
        BTreeMap::from([("q90/acme/1".to_string(), 1), ("q90/acme/2".to_string(), 1)])
    );
    drop(runner);
}

#[test]
fn a_firing_committed_before_a_kill_is_delivered_once_after_restart() {
    let receiver = Receiver::start();
    let lake = alert_lake(&webhook("hook", &receiver.url("hook")), "\"hook\"");
    use_compute(&lake, "beta", "b0", "1");
    let mut doomed = ServeProcess::start_with_env(
        &lake.config(),
        Some(&lake.root()),
        &[("ALLOT_TEST_ALERTS_ABORT_AFTER_NOTICE", "1")],
    );
    doomed.wait_ready(ARRIVES_WITHIN);
    use_compute(&lake, "beta", "b1", "950");
    // The test hook aborts the server right after the notice's commit, as a
    // kill -9 would, before any delivery.
    let status = doomed.wait_exit(ARRIVES_WITHIN);
    assert!(!status.success(), "{status:?}");
    assert!(receiver.received().is_empty());

    // After restart: delivered once, under the key committed before the kill,
    // once the dead server's claim has lapsed.
    let server = ServeProcess::start(&lake.config(), Some(&lake.root()));
    let got = receiver.wait_for("the firing after restart", |r| !r.is_empty());
    assert_eq!(got[0].key(), "q90/beta/1");
    assert_signed(&got[0]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        by_key(&receiver.received()),
        BTreeMap::from([("q90/beta/1".to_string(), 1)])
    );
    drop(server);
}

#[test]
fn two_replicas_deliver_each_firing_once() {
    let receiver = Receiver::start();
    let lake = alert_lake(&webhook("hook", &receiver.url("hook")), "\"hook\"");
    use_compute(&lake, "acme", "r", "1");
    let first = ServeProcess::start(&lake.config(), Some(&lake.root()));
    let second = ServeProcess::start(&lake.config(), Some(&lake.root()));
    first.wait_ready(ARRIVES_WITHIN);
    second.wait_ready(ARRIVES_WITHIN);
    for (i, tenant) in ["acme", "beta", "gamma"].iter().enumerate() {
        use_compute(&lake, tenant, &format!("r{i}"), "990");
    }
    if let Err(received) = receiver.try_wait_for(|r| by_key(r).len() == 3) {
        panic!(
            "three firings: got {:?}\n--- first:\n{}\n--- second:\n{}",
            by_key(&received),
            first.log(),
            second.log()
        );
    }
    // A few more refreshes of both: still one delivery per key.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        by_key(&receiver.received()),
        BTreeMap::from([
            ("q90/acme/1".to_string(), 1),
            ("q90/beta/1".to_string(), 1),
            ("q90/gamma/1".to_string(), 1),
        ])
    );
}

#[test]
fn a_dead_endpoint_is_retried_without_delaying_the_other_channel() {
    let live = Receiver::start();
    let dead = Receiver::start();
    dead.up.store(false, Ordering::SeqCst);
    let channels = format!(
        "{}{}",
        webhook("hook", &live.url("live")),
        webhook("down", &dead.url("dead"))
    );
    let lake = alert_lake(&channels, "\"down\", \"hook\"");
    use_compute(&lake, "gamma", "g0", "1");
    let server = ServeProcess::start(&lake.config(), Some(&lake.root()));
    server.wait_ready(ARRIVES_WITHIN);
    use_compute(&lake, "gamma", "g1", "1000");
    live.wait_for("the live channel's firing", |r| !r.is_empty());
    // The dead endpoint was tried (and refused) while the live one delivered.
    let deadline = Instant::now() + ARRIVES_WITHIN;
    while *dead.refused.lock().unwrap() < 2 {
        assert!(
            Instant::now() < deadline,
            "the dead endpoint was not retried"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let finance = server.token("finance", None);
    let pending = alerts_of(&server, &finance);
    let down = pending[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel"] == "down")
        .unwrap()
        .clone();
    assert_eq!(down["outcome"], "pending", "{down}");
    assert!(down["attempts"].as_u64().unwrap() >= 1, "{down}");
    assert!(down["last_error"].is_string(), "{down}");

    // Up again: delivered after the backoff, under the same key, once.
    dead.up.store(true, Ordering::SeqCst);
    let got = dead.wait_for("the retried firing", |r| !r.is_empty());
    assert_eq!(got[0].key(), "q90/gamma/1");
    assert_signed(&got[0]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(dead.received().len(), 1);
    assert_eq!(live.received().len(), 1);
}

#[test]
fn bad_alert_configuration_is_refused_with_exit_2_naming_the_key() {
    let hook = webhook("hook", "http://127.0.0.1:9/hook");
    let rule =
        |body: &str| format!("{hook}[[alerts.rules]]\nname = \"r\"\nchannels = [\"hook\"]\n{body}");
    let cases = [
        (rule("kind = \"quota\"\nmetric = \"gpu\"\nthreshold = \"90\""), "alerts.rules[0].metric"),
        (rule("kind = \"quota\"\nmetric = \"compute_seconds\"\nthreshold = \"1001\""), "alerts.rules[0].threshold"),
        (rule("kind = \"spend\"\nthreshold = \"5\"\ntenants = [\"nobody\"]"), "alerts.rules[0].tenants[0]"),
        (rule("kind = \"silent\""), "alerts.rules[0].after"),
        (format!("[tenants.acme]\n{}", rule("kind = \"spend\"\nthreshold = \"5\"\ntenants = [\"acme\"]\ntenant_labels = { tier = \"gold\" }")), "alerts.rules[0].tenant_labels"),
        (format!("{}\n[tenants.acme]\nlabels = {{ \"bad key\" = \"x\" }}", rule("kind = \"rejected\"\nthreshold = \"5\"")), "tenants.acme.labels.\"bad key\""),
        (format!("{hook}[[alerts.rules]]\nname = \"r\"\nkind = \"rejected\"\nthreshold = \"5\"\nchannels = [\"pager\"]"), "alerts.rules[0].channels[0]"),
        ("[[alerts.channels]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"hooks.example\"\nsecret = \"0123456789abcdef\"".to_string(), "alerts.channels[0].url"),
        ("[[alerts.channels]]\nname = \"h\"\nkind = \"webhook\"\nurl = \"https://hooks.example/\"".to_string(), "alerts.channels[0].secret"),
    ];
    for (text, key) in cases {
        let lake = CliLake::new(&text);
        for command in [
            &["alerts", "run"][..],
            &["serve", "--listen", "127.0.0.1:0"][..],
        ] {
            let out = lake.run(command);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command:?} {text}: {err}");
            assert!(
                err.contains(key) && err.trim().lines().count() == 1,
                "{text}: {err}"
            );
        }
    }
    // A secret never appears in a refusal.
    let lake = CliLake::new(&format!("{hook}[alerts]\nclaim_lease = \"1s\""));
    let out = lake.run(&["alerts", "run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(HOOK_SECRET));
    // `alerts test` names only a configured channel.
    std::fs::write(lake.config(), &hook).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["alerts", "test", "--channel", "pager", "--config"])
        .arg(lake.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn slack_gets_a_linked_text_and_a_dead_webhook_is_given_up() {
    let slack = Receiver::start();
    // A port nothing listens on: every attempt is refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let channels = format!(
        "[[alerts.channels]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"{}\"\n{}",
        slack.url("services/T0/B0/x"),
        webhook("gone", &format!("http://{closed}/hook"))
    );
    let lake = alert_lake_with(
        &channels,
        "\"chat\", \"gone\"",
        "give_up_after = \"2s\"\ndashboard_url = \"https://allot.example/\"",
    );
    use_compute(&lake, "acme", "s0", "1");
    let server = ServeProcess::start(&lake.config(), Some(&lake.root()));
    server.wait_ready(ARRIVES_WITHIN);
    use_compute(&lake, "acme", "s1", "930");
    let got = slack.wait_for("the Slack message", |r| !r.is_empty());
    let text = got[0].json()["text"].as_str().unwrap().to_string();
    assert_eq!(
        text,
        "[FIRING] q90 (quota) for tenant <https://allot.example/#/tenant/acme|acme>: \
         value 93.10, threshold 90"
    );
    assert!(!got[0].headers.contains_key("x-allot-signature"));

    // The webhook nobody answers is given up on after 2 s: in the API, the
    // metrics and the log, without its secret.
    let finance = server.token("finance", None);
    let deadline = Instant::now() + ARRIVES_WITHIN;
    let gone = loop {
        let alerts = alerts_of(&server, &finance);
        let gone = alerts[0]["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["channel"] == "gone")
            .unwrap()
            .clone();
        if gone["outcome"] == "given_up" {
            break gone;
        }
        assert!(Instant::now() < deadline, "not given up: {gone}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(gone["attempts"].as_u64().unwrap() >= 2, "{gone}");
    assert_eq!(gone["last_error"], "cannot connect");
    let (_, metrics) = server.request("GET /metrics", "", "");
    assert!(
        metrics.contains("allot_alert_deliveries_total{channel=\"gone\",outcome=\"given_up\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("# HELP allot_alerts_firing"), "{metrics}");
    let log = server.log();
    assert!(log.contains("alert delivery given up"), "{log}");
    assert!(!log.contains(HOOK_SECRET), "{log}");
    assert_eq!(slack.received().len(), 1);
}

/// One evaluation's notice (firing or resolved by turns) with its claim, as
/// the runner commits them.
fn notice_with_claim(n: u64, at: i64) -> Vec<AlertRecord> {
    let new = NewNotice {
        rule: "q90".to_string(),
        kind: "quota",
        tenant_id: "acme".to_string(),
        state: if n % 2 == 1 {
            AlertState::Firing
        } else {
            AlertState::Resolved
        },
        value: Some(n.to_string()),
        threshold: "90".to_string(),
        reasons: Vec::new(),
        number: n,
        channels: vec!["hook".to_string()],
    };
    let notice = Notice::record(&new, at, Some(n), at);
    let claim = AlertRecord::Claim {
        key: notice.key.clone(),
        channel: "hook".to_string(),
        details: details(at, None),
        at,
    };
    vec![AlertRecord::Notice(notice), claim]
}

fn details(at: i64, attempt: Option<u32>) -> AttemptDetails {
    AttemptDetails {
        by: "test".to_string(),
        until: at + 1_000_000,
        attempt,
        outcome: attempt.map(|_| "delivered".to_string()),
        error: None,
        next_attempt_at: None,
    }
}

/// Commits `records`, deciding again (here: the same) when fenced.
async fn commit(store: &mut AlertStore, records: Vec<AlertRecord>) {
    for _ in 0..3 {
        if store.commit(records.clone()).await.unwrap() {
            return;
        }
    }
    panic!("fenced three times");
}

#[test]
fn compaction_keeps_the_alerts_table_to_a_few_files_and_its_log_intact() {
    let lake = alert_lake(&webhook("hook", "http://127.0.0.1:9/hook"), "\"hook\"");
    use_compute(&lake, "acme", "c0", "1");
    let location = LakeLocation::parse(lake.root().to_str().unwrap()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let alerts_dir = lake.root().join("alerts");
    let data_files = || {
        common::files_under(&alerts_dir)
            .into_iter()
            .filter(|p| !p.starts_with(alerts_dir.join("_delta_log")))
            .count()
    };
    runtime.block_on(async {
        let mut store = AlertStore::open(&location).await.unwrap();
        // A second server on the lake, committing now and then: its commits
        // fence the first's, and a compaction fences them both in turn.
        let mut other = AlertStore::open(&location).await.unwrap();
        let cycles = 3 * COMPACT_AFTER_COMMITS as u64 / 2;
        let mut compactions = 0;
        for n in 1..=cycles {
            let at = 1_000_000 * i64::try_from(n).unwrap();
            commit(&mut store, notice_with_claim(n, at)).await;
            let attempt = AlertRecord::Attempt {
                key: format!("q90/acme/{n}"),
                channel: "hook".to_string(),
                details: details(at, Some(1)),
                at,
            };
            if n % 10 == 0 {
                other.refresh().await.unwrap();
                commit(&mut other, vec![attempt]).await;
            } else {
                commit(&mut store, vec![attempt]).await;
            }
            if store.compact_when_due().await.unwrap().is_some() {
                compactions += 1;
            }
        }
        assert!(compactions >= 2, "{compactions} compactions");
        // Every commit made a file; compaction leaves at most one per commit
        // since the last one, plus the merged file.
        let table = deltalake::open_table(url::Url::from_directory_path(&alerts_dir).unwrap())
            .await
            .unwrap();
        let active = table.snapshot().unwrap().log_data().iter().count();
        assert!(active <= COMPACT_AFTER_COMMITS + 1, "{active} active files");

        // The table reads as it did: every notice, in order, each delivered once.
        store.refresh().await.unwrap();
        let again = AlertStore::open(&location).await.unwrap();
        let (before, after) = (store.log(), again.log());
        assert_eq!(after.seq, before.seq);
        assert_eq!(after.notices, before.notices);
        assert_eq!(after.deliveries, before.deliveries);
        assert_eq!(after.last_notices(), before.last_notices());
        assert_eq!(
            after.notices.iter().map(|n| n.number).collect::<Vec<_>>(),
            (1..=cycles).collect::<Vec<_>>()
        );
        assert!(
            after
                .deliveries
                .values()
                .all(|d| d.outcome == DeliveryOutcome::Delivered
                    && d.attempts == 1
                    && d.claim.is_some())
        );
        // The second server, fenced by the compactions, reads the same.
        other.refresh().await.unwrap();
        assert_eq!(other.log().notices, before.notices);
    });
    // The replaced files go at the vacuum: what is left on disk is bounded
    // by the active files, not by the number of commits.
    let files_before = data_files();
    assert!(
        files_before as u64 > 2 * 3 * COMPACT_AFTER_COMMITS as u64 / 2,
        "{files_before}"
    );
    let out = lake.run(&["vacuum", "--retention", "0s"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        data_files() <= COMPACT_AFTER_COMMITS + 1,
        "{} files",
        data_files()
    );
    let checkpoints = common::files_under(&alerts_dir.join("_delta_log"))
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".checkpoint.parquet"))
        .count();
    assert!(checkpoints >= 1);
}

/// The active files of the lake's `alerts` table.
async fn active_alert_files(lake: &CliLake) -> usize {
    let dir = lake.root().join("alerts");
    let table = deltalake::open_table(url::Url::from_directory_path(&dir).unwrap())
        .await
        .unwrap();
    table.snapshot().unwrap().log_data().iter().count()
}

/// Records `cycles` delivered notices of q90/acme, one commit each for the
/// notice and its delivery, without compacting; the log.
async fn record_delivered(lake: &CliLake, cycles: u64) -> Arc<AlertLog> {
    let location = LakeLocation::parse(lake.root().to_str().unwrap()).unwrap();
    let mut store = AlertStore::open(&location).await.unwrap();
    for n in 1..=cycles {
        let at = 1_000_000 * i64::try_from(n).unwrap();
        commit(&mut store, notice_with_claim(n, at)).await;
        let attempt = AlertRecord::Attempt {
            key: format!("q90/acme/{n}"),
            channel: "hook".to_string(),
            details: details(at, Some(1)),
            at,
        };
        commit(&mut store, vec![attempt]).await;
    }
    store.log()
}

async fn read_alert_log(lake: &CliLake) -> Arc<AlertLog> {
    let location = LakeLocation::parse(lake.root().to_str().unwrap()).unwrap();
    AlertStore::open(&location).await.unwrap().log()
}

fn assert_same_log(left: &AlertLog, right: &AlertLog) {
    assert_eq!(left.notices, right.notices);
    assert_eq!(left.deliveries, right.deliveries);
    assert_eq!(left.last_notices(), right.last_notices());
}

#[test]
fn a_compaction_killed_before_its_commit_changes_nothing() {
    let lake = alert_lake(&webhook("hook", "http://127.0.0.1:9/hook"), "\"hook\"");
    // acme at 0.1 % of its quota, and its last notice a resolution: the
    // runner has nothing to record, only the table to compact.
    use_compute(&lake, "acme", "k0", "1");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cycles = COMPACT_AFTER_COMMITS as u64;
    let before = runtime.block_on(record_delivered(&lake, cycles));
    let files = runtime.block_on(active_alert_files(&lake));
    assert_eq!(files as u64, 2 * cycles);

    // `allot alerts run` compacts at start; killed between writing the
    // merged file and committing it.
    let out = lake.run_with_env(&["alerts", "run"], &[(ABORT_BEFORE_COMMIT_ENV, "1")]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("aborting the compaction"),
        "{out:?}"
    );
    assert_eq!(runtime.block_on(active_alert_files(&lake)), files);
    assert_same_log(&runtime.block_on(read_alert_log(&lake)), &before);

    // Run again: it compacts, and the alerts read the same.
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_allot"))
        .args(["alerts", "run", "--lake"])
        .arg(lake.root())
        .arg("--config")
        .arg(lake.config())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + ARRIVES_WITHIN;
    while runtime.block_on(active_alert_files(&lake)) != 1 {
        assert!(Instant::now() < deadline, "not compacted");
        std::thread::sleep(Duration::from_millis(200));
    }
    run.kill().unwrap();
    run.wait().unwrap();
    let after = runtime.block_on(read_alert_log(&lake));
    assert_same_log(&after, &before);
    assert!(after.seq > before.seq);

    // The vacuum deletes the replaced files and the killed run's orphan.
    let out = lake.run(&["vacuum", "--retention", "0s"]);
    assert!(out.status.success(), "{out:?}");
    let dir = lake.root().join("alerts");
    let on_disk = common::files_under(&dir)
        .into_iter()
        .filter(|p| !p.starts_with(dir.join("_delta_log")))
        .count();
    assert_eq!(on_disk, 1);
    assert_same_log(&runtime.block_on(read_alert_log(&lake)), &before);
}

#[test]
fn a_refresh_that_reads_new_commits_wakes_the_runner_and_an_idle_one_does_not() {
    // The runner evaluates on this signal instead of waiting for its own tick,
    // so it must come with every refresh that moved the lake, and only then.
    let lake = alert_lake(&webhook("hook", "http://127.0.0.1:9/hook"), "\"hook\"");
    use_compute(&lake, "acme", "w1", "1");
    let location = LakeLocation::parse(lake.root().to_str().unwrap()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let view = Arc::new(LakeView::new(
            location,
            Duration::from_millis(100),
            Arc::new(allot_schemas::clock::SystemClock),
        ));
        let mut moved = view.watch_versions();
        let loaded = view.current().await.unwrap();
        assert_eq!(*moved.borrow_and_update(), Some(loaded.versions));

        // Several refreshes without a commit: no wake-up.
        let waited = Instant::now();
        while view.loaded().unwrap().as_of < loaded.as_of + 500_000 {
            assert!(
                waited.elapsed() < ARRIVES_WITHIN,
                "the view stopped refreshing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!moved.has_changed().unwrap());

        // A commit: the refresh that reads it wakes the watcher with its versions.
        let ingest = tokio::task::spawn_blocking(move || {
            use_compute(&lake, "acme", "w2", "1");
            lake
        });
        let _lake = ingest.await.unwrap();
        tokio::time::timeout(ARRIVES_WITHIN, moved.changed())
            .await
            .expect("a wake-up after the commit")
            .unwrap();
        let woken = *moved.borrow_and_update();
        assert_eq!(woken, Some(view.loaded().unwrap().versions));
        assert_ne!(woken, Some(loaded.versions));
        assert!(woken.unwrap().usage > loaded.versions.usage);
    });
}

/// `ts` as the events' RFC 3339 text, to the second.
fn ts_text(ts: i64) -> String {
    chrono::DateTime::from_timestamp_micros(ts)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Ingests `events` (event id, tenant, time, metric, value) from one file.
fn ingest_events(lake: &CliLake, name: &str, events: &[(String, &str, i64, &str, &str)]) {
    let file = lake.dir.path().join(format!("{name}.jsonl"));
    let lines: String = events
        .iter()
        .map(|(id, tenant, ts, metric, value)| {
            format!(
                "{{\"event_id\":\"{id}\",\"tenant_id\":\"{tenant}\",\"ts\":\"{}\",\"metric\":\"{metric}\",\"value\":{value}}}\n",
                ts_text(*ts)
            )
        })
        .collect();
    std::fs::write(&file, lines).unwrap();
    lake.ingest(&file);
}

/// The facts `live` gives as of `now` on the lake as it is, checked against
/// the same facts computed from scratch.
async fn followed_equals_scratch(
    live: &LiveHealth,
    lake: &CliLake,
    settings: &ReportSettings,
    now: i64,
) -> Arc<LiveFacts> {
    let location = LakeLocation::parse(lake.root().to_str().unwrap()).unwrap();
    let snapshot = LakeSnapshot::load(&location).await.unwrap();
    let followed = live.facts(&snapshot, settings, now).await.unwrap();
    let scratch = LiveFacts::from_scratch(&snapshot, settings, now)
        .await
        .unwrap();
    let at = ts_text(now);
    assert_eq!(followed.health, scratch.health, "health as of {at}");
    assert_eq!(followed.last_event_7d, scratch.last_event_7d, "as of {at}");
    assert_eq!(
        followed.rejected_last_hour, scratch.rejected_last_hour,
        "as of {at}"
    );
    followed
}

fn row<'a>(facts: &'a LiveFacts, tenant: &str) -> &'a TenantHealth {
    facts.health.iter().find(|h| h.tenant_id == tenant).unwrap()
}

/// The health and signals the alert runner reads, followed from refresh to
/// refresh, equal those computed from scratch at every step: time passing
/// within an hour (an event leaving the last 24 h, a gauge's hold running
/// out, an event ahead of the clock coming due), new events with a duplicate,
/// a late event into an old partition, a compaction, the hour moving on. Only
/// the tenants a step changed are read again.
#[test]
fn health_followed_across_refreshes_equals_health_from_scratch() {
    let lake = CliLake::new(&common::price_book_with(
        "[tenants.acme]\nquotas = { compute_seconds = \"100000\" }\n\
         [tenants.beta]\n[tenants.gamma]\n\
         [tenants.epsilon]\nquotas = { storage_bytes = \"500\" }\n",
    ));
    let config = Config::load(Some(&lake.config()), NO_ENV).unwrap();
    let settings = ReportSettings::new(config);
    const MINUTE: i64 = 60_000_000;
    const HOUR: i64 = 60 * MINUTE;
    // `h`: the next whole hour; the instants of the steps are after it, so
    // the rejected event ingested now is within their last 24 h.
    let h = (chrono::Utc::now().timestamp_micros() / HOUR + 1) * HOUR;
    let mut events = Vec::new();
    let mut n = 0;
    let mut event = |tenant, ts, metric, value| {
        n += 1;
        (format!("e{n}"), tenant, ts, metric, value)
    };
    // Steady use every 2 h for 9 days; gamma stops 25 h before `h`.
    let mut t = h - 216 * HOUR;
    while t < h - 2 * HOUR {
        events.push(event("acme", t, "compute_seconds", "10"));
        events.push(event("beta", t, "compute_seconds", "10"));
        events.push(event("beta", t + MINUTE, "egress_bytes", "300"));
        if t < h - 25 * HOUR {
            events.push(event("gamma", t, "compute_seconds", "10"));
        }
        t += 2 * HOUR;
    }
    // acme's burst in the hour before `h`, beside delta's use: a noisy neighbour.
    events.push(event("acme", h - 30 * MINUTE, "compute_seconds", "5000"));
    events.push(event("delta", h - 50 * MINUTE, "compute_seconds", "1"));
    // In the hour where the last 24 h start: acme's events leave the window
    // one by one; gamma's last event leaves it at the second step.
    for minutes in [5, 15, 30, 45] {
        events.push(event(
            "acme",
            h - 24 * HOUR + minutes * MINUTE,
            "compute_seconds",
            "2",
        ));
    }
    events.push(event(
        "gamma",
        h - 24 * HOUR + 20 * MINUTE,
        "compute_seconds",
        "1",
    ));
    // epsilon's storage, held 1 h: over its quota at the first step, not at
    // the second.
    events.push(event("epsilon", h - 40 * MINUTE, "storage_bytes", "1000"));
    // beta's event ahead of the first step's instant.
    events.push(event("beta", h + 22 * MINUTE, "compute_seconds", "3"));
    // A rejected event of beta's (no such metric).
    events.push(event("beta", h - HOUR, "no_such_metric", "1"));
    ingest_events(&lake, "first", &events);

    let live = LiveHealth::new();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let step = |now: i64| runtime.block_on(followed_equals_scratch(&live, &lake, &settings, now));

    let first = step(h + 10 * MINUTE);
    assert_eq!(first.tenants_read, 5);
    assert_eq!(row(&first, "acme").noisy_metrics, ["compute_seconds"]);
    // Ten of the steady events, three of the hour where the window starts, the burst.
    assert_eq!(row(&first, "acme").events_24h, 14);
    assert_eq!(row(&first, "gamma").events_24h, 1);
    assert_eq!(row(&first, "epsilon").status, HealthStatus::Critical);
    assert!(
        row(&first, "beta")
            .reasons
            .iter()
            .any(|r| r.code == "rejected_events")
    );

    // 15 minutes on, nothing new: only beta, whose event came due, is read.
    let second = step(h + 25 * MINUTE);
    assert_eq!(second.tenants_read, 1);
    assert_eq!(row(&second, "acme").events_24h, 13);
    assert_eq!(row(&second, "gamma").events_24h, 0);
    // Its storage no longer held (and its last event an hour old: stale).
    let codes: Vec<&str> = row(&second, "epsilon")
        .reasons
        .iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, ["stale"]);

    // New events of acme's, one of them a copy of an earlier one.
    let copy = events[0].clone();
    ingest_events(
        &lake,
        "second",
        &[
            (
                "later".to_string(),
                "acme",
                h + 20 * MINUTE,
                "compute_seconds",
                "7",
            ),
            copy,
        ],
    );
    let third = step(h + 40 * MINUTE);
    assert_eq!(third.tenants_read, 1);
    assert_eq!(row(&third, "acme").events_24h, 13);

    // A late event into beta's partition of five days ago.
    ingest_events(
        &lake,
        "late",
        &[(
            "late".to_string(),
            "beta",
            h - 120 * HOUR,
            "compute_seconds",
            "1",
        )],
    );
    assert_eq!(step(h + 41 * MINUTE).tenants_read, 1);

    // A compaction rewrites partitions and computes their rollups.
    let out = lake.run(&["compact"]);
    assert!(out.status.success(), "{out:?}");
    step(h + 42 * MINUTE);
    step(h + 43 * MINUTE);

    // The hour moves on: every tenant is read again.
    assert_eq!(step(h + 65 * MINUTE).tenants_read, 5);
    step(h + 66 * MINUTE);
}
