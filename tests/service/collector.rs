//! The Kafka collector against the real broker: exactly once through crashes
//! (including one between writing files and committing them), and poison events
//! set aside in the dead-letter topic and `rejected_events` while the partition
//! keeps moving. The same over SASL_SSL on a zstd topic, clear errors for wrong
//! credentials and an untrusted CA, and a dead-letter topic that refuses writes.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use allot_schemas::layout::kafka_app_id;
use deltalake::DeltaTable;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::scenario::{CollectorProcess, Scenario, allot_bin};

/// A small deterministic generator (xorshift) for the crash moments.
struct Seeded(u64);

impl Seeded {
    fn next_ms(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low)
    }
}

fn crash_event(i: usize) -> (String, String) {
    let tenant = format!("t{:02}", i % 40);
    let payload = format!(
        r#"{{"event_id":"c{i}","tenant_id":"{tenant}","ts":"2026-04-{:02}T{:02}:00:00Z","metric":"compute_seconds","value":{}.{:03}}}"#,
        1 + i % 28,
        i % 24,
        i,
        i % 1000
    );
    (format!("k{i}"), payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_kill_9_and_a_crash_before_commit() {
    let _serial = common::serial().await;
    const EVENTS: usize = 200_000;
    const PARTITIONS: i32 = 12;
    let scenario = Scenario::new("crash", PARTITIONS).await;
    let lake = &scenario.lake;
    scenario.produce((0..EVENTS).map(crash_event)).await;
    // Small flushes, so that every run commits many times whatever the speed of
    // the consumer (a fast one reads the whole topic before its first flush).
    let small_flushes = ("ALLOT__INGEST__FLUSH_ROWS", "5000");

    // 1: a crash between writing the files of the second flush and committing them.
    let mut first = scenario.collector(&[small_flushes, ("ALLOT_TEST_ABORT_BEFORE_COMMIT", "2")]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = first.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the abort hook never fired");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "the collector should have aborted");

    // 2 and 3: kill -9 at seeded random moments.
    let mut moments = Seeded(0x5eed_2026);
    for _ in 0..2 {
        let mut child = scenario.collector(&[small_flushes]);
        std::thread::sleep(Duration::from_millis(moments.next_ms(1500, 6000)));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // 4: a collector runs until the lake has everything, then stops gracefully.
    let last = scenario.collector(&[]);
    scenario.wait_for_zero_lag(Duration::from_secs(300)).await;
    last.stop();

    assert_exactly_once(lake, EVENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_go_to_the_dead_letter_topic_and_the_partition_moves_on() {
    let _serial = common::serial().await;
    const PARTITIONS: i32 = 2;
    let scenario = Scenario::new("poison", PARTITIONS).await;
    let ok_ts = "2026-03-01T10:00:00Z";
    let good = |i: usize| {
        format!(
            r#"{{"event_id":"g{i}","tenant_id":"acme","ts":"{ok_ts}","metric":"egress_bytes","value":{i}}}"#
        )
    };
    let poison: Vec<(&str, String)> = vec![
        ("invalid_json", "{\"event_id\":".to_string()),
        ("invalid_type", format!(r#"{{"event_id":"p1","tenant_id":"acme","ts":"{ok_ts}","metric":"egress_bytes","value":"1"}}"#)),
        ("missing_field", format!(r#"{{"event_id":"p2","tenant_id":"acme","ts":"{ok_ts}","metric":"egress_bytes"}}"#)),
        ("invalid_value", format!(r#"{{"event_id":"p3","tenant_id":"acme","ts":"{ok_ts}","metric":"egress_bytes","value":-5}}"#)),
        ("invalid_value", format!(r#"{{"event_id":"p4","tenant_id":"acme","ts":"{ok_ts}","metric":"egress_bytes","value":1e400}}"#)),
        ("invalid_timestamp", r#"{"event_id":"p5","tenant_id":"acme","ts":"2026-03-01T10:00:00","metric":"egress_bytes","value":1}"#.to_string()),
        ("future_timestamp", format!(r#"{{"event_id":"p6","tenant_id":"acme","ts":"{}","metric":"egress_bytes","value":1}}"#, (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339())),
        ("unknown_metric", format!(r#"{{"event_id":"p7","tenant_id":"acme","ts":"{ok_ts}","metric":"gpu","value":1}}"#)),
        ("field_too_long", format!(r#"{{"event_id":"p8","tenant_id":"acme","ts":"{ok_ts}","metric":"egress_bytes","value":1,"region":"{}"}}"#, "r".repeat(70))),
        ("invalid_tenant_id", format!(r#"{{"event_id":"p9","tenant_id":"../x","ts":"{ok_ts}","metric":"egress_bytes","value":1}}"#)),
    ];
    let mut payloads = Vec::new();
    for (i, (_, bad)) in poison.iter().enumerate() {
        payloads.push((format!("k{i}"), good(i)));
        payloads.push((format!("k{i}"), bad.clone()));
    }
    payloads.push(("k0".to_string(), good(100)));
    scenario.produce(payloads).await;

    let collector = scenario.collector(&[]);
    scenario.wait_for_zero_lag(Duration::from_secs(120)).await;
    collector.stop();

    let rows = scenario.rows("usage_events").await;
    assert_eq!(rows.len(), poison.len() + 1);
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for (reason, _) in &poison {
        *expected.entry(reason.to_string()).or_default() += 1;
    }
    let rejected = scenario.rows("rejected_events").await;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rejected {
        *reasons
            .entry(row.columns["reason"].clone().unwrap())
            .or_default() += 1;
    }
    assert_eq!(reasons, expected);

    // The dead-letter topic holds every poison event with its error headers.
    let letters = read_dead_letters(
        &common::Broker::plain(),
        &format!("{}.dlq", scenario.topic),
        poison.len(),
    );
    let mut dead: BTreeMap<String, usize> = BTreeMap::new();
    for letter in letters {
        assert!(
            poison.iter().any(|(_, bad)| *bad == letter.payload),
            "unexpected dead letter {}",
            letter.payload
        );
        *dead.entry(letter.code).or_default() += 1;
    }
    assert_eq!(dead, expected);
}

/// A message of a dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ReadLetter {
    payload: String,
    /// The `allot-error-code` header.
    code: String,
    /// The `allot-source` header.
    source: String,
}

/// Reads the dead-letter topic `topic` from the start until it holds `distinct`
/// different letters (60 s at most), and returns every message read; each must
/// carry all three `allot-*` headers.
fn read_dead_letters(broker: &common::Broker, topic: &str, distinct: usize) -> Vec<ReadLetter> {
    let dlq: BaseConsumer = broker
        .client()
        .set("group.id", format!("{topic}-reader-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    dlq.subscribe(&[topic]).unwrap();
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while letters.iter().collect::<BTreeSet<_>>().len() < distinct {
        assert!(
            Instant::now() < deadline,
            "dead letters so far: {letters:?}"
        );
        let Some(message) = dlq.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.unwrap();
        let headers = message.headers().expect("headers");
        let header = |key: &str| {
            headers
                .iter()
                .find(|h| h.key == key)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| panic!("no {key} header"))
        };
        assert!(!header("allot-error").is_empty());
        letters.push(ReadLetter {
            payload: String::from_utf8_lossy(message.payload().unwrap()).into_owned(),
            code: header("allot-error-code"),
            source: header("allot-source"),
        });
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_and_removes_producer_duplicates() {
    use allot_ingest::assemble::EventAssembler;
    use allot_ingest::writer::LakeWriter;
    use allot_schemas::clock::SystemClock;
    use allot_schemas::config::Config;
    use allot_schemas::layout::{LakeLocation, Provenance};

    let lake_dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(lake_dir.path().to_str().unwrap()).unwrap();
    let config = Config::default();
    // Two collectors that have not seen each other's commits both write the same
    // producer retry (same tenant and event id, two Kafka messages).
    let mut first = LakeWriter::for_collector(&lake, allot_lake::dedup::DedupWindow::default())
        .await
        .unwrap();
    let mut second = LakeWriter::for_collector(&lake, allot_lake::dedup::DedupWindow::default())
        .await
        .unwrap();
    let event = |i: usize| {
        format!(
            r#"{{"event_id":"d{i}","tenant_id":"acme","ts":"2026-03-01T0{}:00:00Z","metric":"compute_seconds","value":{i}}}"#,
            i % 10
        )
    };
    for (writer, offset_base, ids) in [(&mut first, 0, 0..60), (&mut second, 1000, 40..100)] {
        for chunk in ids.collect::<Vec<_>>().chunks(20) {
            let mut assembler = EventAssembler::new(&config, std::sync::Arc::new(SystemClock));
            for &i in chunk {
                assembler.push(
                    event(i).as_bytes(),
                    Provenance::Kafka {
                        topic: "usage",
                        partition: 0,
                        offset: offset_base + i as i64,
                    },
                );
            }
            writer.append(assembler.take().unwrap()).await.unwrap();
        }
    }
    let before = common::read_lake_table(lake_dir.path(), "usage_events").await;
    assert_eq!(
        before.len(),
        120,
        "both writers' rows, 20 of them duplicates"
    );

    let summary = allot_lake::compact(
        allot_lake::CompactOptions {
            lake: lake.clone(),
            target_file_bytes: 128 << 20,
            min_files: 2,
            catalog: allot_schemas::config::Config::default().catalog(),
            dedup_window: allot_lake::dedup::DedupWindow::default(),
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(summary.duplicates_removed, 20);
    assert_eq!(summary.partitions, 1);
    assert_eq!(summary.files_removed, 6);
    assert_eq!(summary.files_added, 1);

    let after = common::read_lake_table(lake_dir.path(), "usage_events").await;
    assert_eq!(after.len(), 100);
    let mut ids: Vec<String> = after
        .iter()
        .map(|r| r.columns["event_id"].clone().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    // The first ingested copy is kept: for ids 40..60 that is the first writer's row.
    for row in &after {
        let i: i64 = row.columns["event_id"].as_ref().unwrap()[1..]
            .parse()
            .unwrap();
        let expected_offset = if i < 60 { i } else { 1000 + i };
        assert_eq!(
            row.columns["source"].as_deref(),
            Some(format!("kafka:usage/0@{expected_offset}").as_str())
        );
    }
}

/// Sends SIGSTOP or SIGCONT to a process.
fn signal(child: &CollectorProcess, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Checks the lake holds exactly events `0..count` of `crash_event`, each once.
async fn assert_exactly_once(lake: &Path, count: usize) {
    let rows = common::read_lake_table(lake, "usage_events").await;
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for row in &rows {
        let i: usize = row.columns["event_id"].as_ref().unwrap()[1..]
            .parse()
            .unwrap();
        assert_eq!(
            row.columns["value"].as_deref(),
            Some(format!("{i}.{:03}000000", i % 1000).as_str())
        );
        *seen.entry(i).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "events counted twice: {twice:?}");
    assert_eq!(seen.len(), count, "events missing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_collector_is_fenced_after_others_took_its_partitions() {
    let _serial = common::serial().await;
    const EVENTS: usize = 40_000;
    const PARTITIONS: i32 = 4;
    let scenario = Scenario::new("zombie", PARTITIONS).await;
    let lake = &scenario.lake;
    scenario.produce((0..EVENTS).map(crash_event)).await;

    // The zombie buffers everything and would commit only after a long interval.
    let zombie = scenario.collector(&[
        ("ALLOT__INGEST__FLUSH_ROWS", "1000000"),
        ("ALLOT__INGEST__FLUSH_INTERVAL", "15s"),
    ]);
    std::thread::sleep(Duration::from_secs(8));
    signal(&zombie, "STOP");
    // Past the 10 s session timeout the group gives its partitions to a new collector.
    let healthy = scenario.collector(&[]);
    scenario.wait_for_zero_lag(Duration::from_secs(120)).await;
    signal(&zombie, "CONT");
    // Give the zombie time to reach its flush and be fenced (or see the revocation).
    std::thread::sleep(Duration::from_secs(12));
    zombie.stop();
    healthy.stop();
    assert_exactly_once(lake, EVENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_while_collectors_join_and_die_during_production() {
    let _serial = common::serial().await;
    const EVENTS: usize = 60_000;
    const PARTITIONS: i32 = 6;
    let scenario = Scenario::new("rebalance", PARTITIONS).await;
    let lake = &scenario.lake;

    let producing = {
        let topic = scenario.topic.clone();
        tokio::spawn(async move {
            for chunk in 0..6 {
                common::produce(
                    &topic,
                    (chunk * 10_000..(chunk + 1) * 10_000).map(crash_event),
                )
                .await;
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let mut collectors: Vec<CollectorProcess> = (0..3).map(|_| scenario.collector(&[])).collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    collectors.push(scenario.collector(&[]));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut victim = collectors.remove(0);
    victim.kill().unwrap();
    victim.wait().unwrap();
    producing.await.unwrap();
    scenario.wait_for_zero_lag(Duration::from_secs(180)).await;
    for collector in collectors {
        collector.stop();
    }
    assert_exactly_once(lake, EVENTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_offsets_moved_on_is_abandoned() {
    use allot_ingest::IngestError;
    use allot_ingest::assemble::EventAssembler;
    use allot_ingest::writer::{LakeWriter, OffsetCommit};
    use allot_lake::txns::AppOffset;
    use allot_schemas::clock::SystemClock;
    use allot_schemas::config::Config;
    use allot_schemas::layout::{LakeLocation, Provenance};

    let lake_dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(lake_dir.path().to_str().unwrap()).unwrap();
    let config = Config::default();
    let app_id = kafka_app_id("g", "usage", 0);
    let batch = |range: std::ops::Range<usize>| {
        let mut assembler = EventAssembler::new(&config, std::sync::Arc::new(SystemClock));
        for i in range {
            let (_, payload) = crash_event(i);
            assembler.push(
                payload.as_bytes(),
                Provenance::Kafka {
                    topic: "usage",
                    partition: 0,
                    offset: i as i64,
                },
            );
        }
        assembler.take().unwrap()
    };
    let mut owner = LakeWriter::for_collector(&lake, allot_lake::dedup::DedupWindow::default())
        .await
        .unwrap();
    let mut zombie = LakeWriter::for_collector(&lake, allot_lake::dedup::DedupWindow::default())
        .await
        .unwrap();
    let commit = |expected: Option<i64>, last: i64| OffsetCommit {
        expected: vec![(app_id.clone(), expected)],
        records: vec![AppOffset::new(app_id.clone(), last)],
        abort_before_commit: false,
    };
    owner
        .append_with_offsets(batch(0..100), &commit(None, 99))
        .await
        .unwrap();
    // The zombie read the partition from the beginning too, before the owner committed.
    let err = zombie
        .append_with_offsets(batch(0..100), &commit(None, 99))
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::Fenced(_)), "{err}");
    let rows = common::read_lake_table(lake_dir.path(), "usage_events").await;
    assert_eq!(
        rows.len(),
        100,
        "the fenced commit's files are not referenced"
    );
    // Another collector commits for another partition meanwhile: no conflict.
    let other_id = kafka_app_id("g", "usage", 1);
    let mut other = LakeWriter::for_collector(&lake, allot_lake::dedup::DedupWindow::default())
        .await
        .unwrap();
    other
        .append_with_offsets(
            batch(1000..1010),
            &OffsetCommit {
                expected: vec![(other_id.clone(), None)],
                records: vec![AppOffset::new(other_id, 9)],
                abort_before_commit: false,
            },
        )
        .await
        .unwrap();
    // The owner continues from where it recorded, past the other's commit.
    owner
        .append_with_offsets(batch(100..150), &commit(Some(99), 149))
        .await
        .unwrap();
    assert_eq!(
        common::read_lake_table(lake_dir.path(), "usage_events")
            .await
            .len(),
        160
    );
    // The zombie, now caught up with the log, is still fenced for what it read.
    let err = zombie
        .append_with_offsets(batch(100..150), &commit(Some(99), 149))
        .await
        .unwrap_err();
    assert!(matches!(err, IngestError::Fenced(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_a_broker_restart() {
    let _serial = common::serial().await;
    const PARTITIONS: i32 = 4;
    let scenario = Scenario::new("restart", PARTITIONS).await;
    let lake = &scenario.lake;
    scenario.produce((0..30_000).map(crash_event)).await;
    let collector = scenario.collector(&[]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/kafka-restart"
    ))
    .arg("5")
    .status()
    .expect("run kafka-restart");
    assert!(restarted.success(), "the broker did not restart");
    scenario.produce((30_000..60_000).map(crash_event)).await;
    scenario.wait_for_zero_lag(Duration::from_secs(180)).await;
    collector.stop();
    assert_exactly_once(lake, 60_000).await;
}

/// A free TCP port on 127.0.0.1 for a collector's metrics endpoint.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One sample of the Prometheus text format: name, labels and value text.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: String,
}

/// Fetches `http://127.0.0.1:<port>/metrics` and parses its samples; `None` while
/// the endpoint does not answer.
fn scrape(port: u16) -> Option<Vec<Sample>> {
    let body = scrape_text(port)?;
    let mut samples = Vec::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("label");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value: value.to_string(),
        });
    }
    Some(samples)
}

/// The text of `http://127.0.0.1:<port>/metrics`; `None` while the endpoint does
/// not answer.
fn scrape_text(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    Some(body.to_string())
}

/// Sums of a counter per value of the given labels.
fn counter_by(samples: &[Sample], name: &str, labels: &[&str]) -> BTreeMap<Vec<String>, u64> {
    let mut out = BTreeMap::new();
    for sample in samples.iter().filter(|s| s.name == name) {
        let key = labels
            .iter()
            .map(|l| sample.labels.get(*l).cloned().unwrap_or_default())
            .collect();
        *out.entry(key).or_default() += sample.value.parse::<u64>().expect("integer counter");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_accepted_and_rejected_events_per_tenant_and_lag_reaches_zero() {
    let _serial = common::serial().await;
    const PARTITIONS: i32 = 3;
    let scenario = Scenario::new("metrics", PARTITIONS).await;
    let ok_ts = "2026-03-01T10:00:00Z";
    let tenants = ["acme", "globex", "initech"];
    let mut payloads = Vec::new();
    let mut accepted: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for i in 0..3000usize {
        let tenant = tenants[i % 7 % 3];
        payloads.push((
            format!("k{i}"),
            format!(
                r#"{{"event_id":"m{i}","tenant_id":"{tenant}","ts":"{ok_ts}","metric":"compute_seconds","value":{i}}}"#
            ),
        ));
        *accepted.entry(vec![tenant.to_string()]).or_default() += 1;
    }
    // Rejections with a readable tenant, and without one.
    let mut rejected: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for i in 0..30usize {
        let (payload, tenant, reason) = match i % 3 {
            0 => (
                format!(
                    r#"{{"event_id":"b{i}","tenant_id":"globex","ts":"{ok_ts}","metric":"gpu","value":1}}"#
                ),
                "globex",
                "unknown_metric",
            ),
            1 => (
                format!(
                    r#"{{"event_id":"b{i}","tenant_id":"../x","ts":"{ok_ts}","metric":"gpu","value":1}}"#
                ),
                "",
                "invalid_tenant_id",
            ),
            _ => ("{not json".to_string(), "", "invalid_json"),
        };
        payloads.push((format!("b{i}"), payload));
        *rejected
            .entry(vec![tenant.to_string(), reason.to_string()])
            .or_default() += 1;
    }
    scenario.produce(payloads).await;

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let collector = scenario.collector(&[("ALLOT__INGEST__METRICS_LISTEN", listen.as_str())]);
    scenario.wait_for_zero_lag(Duration::from_secs(120)).await;
    // The lake has everything; the metrics catch up within a report interval.
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        if let Some(samples) = scrape(port) {
            let lags: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.name == "allot_consumer_lag")
                .collect();
            let caught_up = lags.len() == PARTITIONS as usize
                && lags
                    .iter()
                    .all(|s| s.value == "0" && s.labels["topic"] == scenario.topic);
            if caught_up
                && counter_by(&samples, "allot_events_accepted_total", &["tenant"]) == accepted
            {
                break samples;
            }
        }
        assert!(
            Instant::now() < deadline,
            "metrics never caught up: {:?}",
            scrape(port)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        counter_by(
            &samples,
            "allot_events_rejected_total",
            &["tenant", "reason"]
        ),
        rejected
    );
    let commits = counter_by(&samples, "allot_delta_commits_total", &["outcome"]);
    assert!(commits[&vec!["committed".to_string()]] >= 1, "{commits:?}");
    assert_eq!(
        counter_by(&samples, "allot_rows_flushed_total", &[])[&vec![]],
        3000
    );
    for name in [
        "allot_flush_duration_seconds_count",
        "allot_bytes_flushed_total",
        "allot_buffered_bytes",
        "allot_duplicates_dropped_total",
    ] {
        assert!(
            samples.iter().any(|s| s.name == name),
            "{name} missing from /metrics"
        );
    }
    // Every series of the collector is as Prometheus expects it, help texts
    // included.
    common::promtool::assert_promtool_accepts_metrics(&scrape_text(port).unwrap());
    collector.stop();
}

#[test]
fn a_bad_metrics_address_exits_2_naming_the_flag() {
    let lake = tempfile::tempdir().unwrap();
    let output = Command::new(allot_bin())
        .args([
            "ingest",
            "--brokers",
            "127.0.0.1:1",
            "--topic",
            "t",
            "--group",
            "g",
            "--metrics-listen",
            "localhost-ish",
            "--lake",
        ])
        .arg(lake.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("allot:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("--metrics-listen localhost-ish"),
        "{stderr}"
    );
}

/// Sends `payload` to one explicit partition of `topic`.
async fn produce_to_partitions(topic: &str, payloads: &[(i32, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", common::kafka_bootstrap())
        .create()
        .expect("producer");
    for (partition, payload) in payloads {
        producer
            .send(
                FutureRecord::<(), String>::to(topic)
                    .partition(*partition)
                    .payload(payload),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_leaves_one_row_per_event_across_two_collectors() {
    let _serial = common::serial().await;
    let scenario = Scenario::new("bgcompact", 2).await;
    let lake = &scenario.lake;
    let env = [
        ("ALLOT__INGEST__COMPACTION_INTERVAL", "\"2s\""),
        ("ALLOT__INGEST__COMPACTION_MIN_FILES", "2"),
    ];
    let first = scenario.collector(&env);
    let second = scenario.collector(&env);
    // Let the group give one partition to each.
    tokio::time::sleep(Duration::from_secs(6)).await;
    const EVENTS: usize = 300;
    // Each event is sent to both partitions (a producer retry that went to the other
    // partition), in rounds so that every tenant-day gets several small files.
    for round in 0..3 {
        let mut payloads = Vec::new();
        for i in (round * 100)..((round + 1) * 100) {
            let (_, payload) = crash_event(i);
            payloads.push((0, payload.clone()));
            payloads.push((1, payload));
        }
        produce_to_partitions(&scenario.topic, &payloads).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    scenario.wait_for_zero_lag(Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let rows = scenario.rows("usage_events").await;
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| r.columns["event_id"].clone().unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), EVENTS, "an event is missing");
        if rows.len() == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background compaction left {} rows for {EVENTS} events",
            rows.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    first.stop();
    second.stop();
    assert_exactly_once(lake, EVENTS).await;
    let log = common::files_under(&lake.join("usage_events/_delta_log"));
    assert!(
        log.iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .any(|p| std::fs::read_to_string(p).unwrap().contains("\"OPTIMIZE\"")),
        "no compaction commit in the log"
    );
}

/// The peak resident memory of a process, from `/proc/<pid>/status`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_does_not_grow_with_the_files_in_the_table() {
    let _serial = common::serial().await;
    const EVENTS: usize = 20_000;
    const PARTITIONS: i32 = 4;
    // A lake that already holds 30,000 files (1,000 tenants × 30 days, one event
    // each), as after months of running, beside an empty one.
    let work = tempfile::tempdir().unwrap();
    let history = work.path().join("history.jsonl");
    let mut lines = String::new();
    for tenant in 0..1000 {
        for day in 1..=30 {
            lines += &format!(
                "{{\"event_id\":\"h{tenant}-{day}\",\"tenant_id\":\"old-{tenant:04}\",\"ts\":\"2026-04-{day:02}T12:00:00Z\",\"metric\":\"compute_seconds\",\"value\":1}}\n"
            );
        }
    }
    std::fs::write(&history, lines).unwrap();
    let full = work.path().join("full");
    let empty = work.path().join("empty");
    common::ingest_into(&full, &history);
    assert_eq!(
        common::files_under(&full.join("usage_events"))
            .iter()
            .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
            .count(),
        30_000
    );

    let mut scenario = Scenario::new("history", PARTITIONS).await;
    let event = |i: usize| {
        let payload = format!(
            r#"{{"event_id":"n{i}","tenant_id":"new-{:03}","ts":"2026-06-01T{:02}:00:00Z","metric":"compute_seconds","value":{i}}}"#,
            i % 100,
            i % 24
        );
        (format!("k{i}"), payload)
    };
    scenario.produce((0..EVENTS).map(event)).await;
    let mut peaks = Vec::new();
    for lake in [&empty, &full] {
        // A group and a lake each: both collectors read the whole topic.
        scenario.group = format!(
            "{}-{}",
            scenario.topic,
            lake.file_name().unwrap().to_string_lossy()
        );
        scenario.lake = lake.clone();
        let collector = scenario.collector(&[("ALLOT__INGEST__COMPACTION_INTERVAL", "\"0s\"")]);
        scenario.wait_for_zero_lag(Duration::from_secs(150)).await;
        peaks.push(peak_rss_kib(collector.id()));
        collector.stop();
    }
    eprintln!(
        "peak RSS: {} MiB on an empty lake, {} MiB on one of 30,000 files",
        peaks[0] / 1024,
        peaks[1] / 1024
    );
    // Holding the table's file list once costs about 2.5 KiB per file (75 MiB here).
    assert!(
        peaks[1] < peaks[0] + 40 * 1024,
        "peak RSS {} MiB on an empty lake, {} MiB on one of 30,000 files",
        peaks[0] / 1024,
        peaks[1] / 1024
    );
    let rows = common::read_lake_table(&full, "usage_events").await;
    let new: BTreeSet<&str> = rows
        .iter()
        .filter_map(|r| r.columns["event_id"].as_deref())
        .filter(|id| id.starts_with('n'))
        .collect();
    assert_eq!((rows.len(), new.len()), (EVENTS + 30_000, EVENTS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_with_ten_thousand_tenants() {
    let _serial = common::serial().await;
    const TENANTS: usize = 10_000;
    const EVENTS: usize = 20_000;
    const PARTITIONS: i32 = 4;
    let scenario = Scenario::new("tenants10k", PARTITIONS).await;
    let lake = &scenario.lake;
    let event = |i: usize| {
        let tenant = format!("tenant-{:05}", i % TENANTS);
        let payload = format!(
            r#"{{"event_id":"c{i}","tenant_id":"{tenant}","ts":"2026-05-01T{:02}:00:00Z","metric":"compute_seconds","value":{i}.{:03}}}"#,
            i % 24,
            i % 1000
        );
        (format!("k{i}"), payload)
    };
    scenario.produce((0..EVENTS).map(event)).await;
    let collector = scenario.collector(&[
        ("ALLOT__INGEST__FLUSH_ROWS", "1000000"),
        ("ALLOT__INGEST__FLUSH_INTERVAL", "\"60s\""),
        ("ALLOT__INGEST__FLUSH_BYTES", "\"2MiB\""),
        ("ALLOT__INGEST__MAX_BUFFER_BYTES", "\"4MiB\""),
        ("ALLOT__INGEST__COMPACTION_INTERVAL", "\"0s\""),
    ]);
    scenario.wait_for_zero_lag(Duration::from_secs(150)).await;
    let peak_kib = peak_rss_kib(collector.id());
    collector.stop();
    assert!(
        peak_kib < 512 * 1024,
        "peak RSS {} MiB with {TENANTS} tenants",
        peak_kib / 1024
    );
    assert_exactly_once(lake, EVENTS).await;
    let tenants: std::collections::BTreeSet<String> = scenario
        .rows("usage_events")
        .await
        .into_iter()
        .map(|r| r.partition["tenant_id"].clone())
        .collect();
    assert_eq!(tenants.len(), TENANTS);
}

// --- Secured Kafka: the SASL_SSL broker of `scripts/kafka-up --sasl-ssl`. ---

/// A collector of `scenario` whose stderr goes to `log`.
fn start_logging_collector(
    scenario: &Scenario,
    extra_env: &[(&str, &str)],
    log: &Path,
) -> CollectorProcess {
    let mut command = scenario.collector_command(extra_env);
    command.stderr(std::fs::File::create(log).unwrap());
    CollectorProcess(command.spawn().expect("start collector"))
}

/// Commits in `usage_events`' log so far.
fn commits(lake: &Path) -> usize {
    std::fs::read_dir(lake.join("usage_events/_delta_log"))
        .map(|dir| {
            dir.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
            })
            .count()
        })
        .unwrap_or(0)
}

/// A poison event (an unknown metric) with a unique id.
fn poison_event(i: usize) -> (String, String) {
    (
        format!("k{i}"),
        format!(
            r#"{{"event_id":"x{i}","tenant_id":"acme","ts":"2026-04-01T00:00:00Z","metric":"gpu","value":1}}"#
        ),
    )
}

/// Checks a collector's log: written, and free of terminal escape sequences.
fn assert_plain_log(log: &Path) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!text.is_empty(), "the collector logged nothing");
    assert!(
        !text.contains('\u{1b}'),
        "escape sequences in a log file: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_sasl_ssl_a_zstd_topic_is_ingested_exactly_once_through_kill_9() {
    let _serial = common::serial().await;
    const EVENTS: usize = 60_000;
    const PARTITIONS: i32 = 4;
    let scenario = Scenario::on(
        common::Broker::sasl_ssl(),
        "secure",
        PARTITIONS,
        &[("compression.type", "zstd")],
    )
    .await;
    let (broker, topic, lake) = (&scenario.broker, &scenario.topic, &scenario.lake);
    let dlq_topic = format!("{topic}.dlq");
    broker.create_topic(&dlq_topic, 1).await;
    let dir = &scenario.dir;
    // Every 500th message is poison; the rest are the crash test's events.
    let poison: Vec<(String, String)> = (0..EVENTS / 500).map(poison_event).collect();
    let mut payloads: Vec<(String, String)> = (0..EVENTS).map(crash_event).collect();
    for (n, event) in poison.iter().enumerate() {
        payloads.insert(n * 501, event.clone());
    }
    let mut zstd = broker.client();
    zstd.set("compression.type", "zstd");
    common::produce_with(zstd, topic, payloads).await;

    // Small flushes, and a kill -9 right after the first commit: the topic is
    // far from read then.
    let small_flushes = ("ALLOT__INGEST__FLUSH_ROWS", "3000");
    let first_log = dir.path().join("first.log");
    let mut first = start_logging_collector(&scenario, &[small_flushes], &first_log);
    let deadline = Instant::now() + Duration::from_secs(120);
    while commits(lake) < 2 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the collector stopped: {}",
            std::fs::read_to_string(&first_log).unwrap()
        );
        assert!(Instant::now() < deadline, "no commit over SASL_SSL in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let last_log = dir.path().join("last.log");
    let last = start_logging_collector(&scenario, &[], &last_log);
    scenario.wait_for_zero_lag(Duration::from_secs(300)).await;
    last.stop();

    assert_exactly_once(lake, EVENTS).await;
    // Every poison event reached the dead-letter topic through the same secured
    // connection (at least once: a letter of the killed collector's last flush
    // may be there twice), and rejected_events.
    let letters = read_dead_letters(broker, &dlq_topic, poison.len());
    let payloads: BTreeSet<&str> = letters.iter().map(|l| l.payload.as_str()).collect();
    let expected: BTreeSet<&str> = poison.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(payloads, expected);
    assert!(letters.iter().all(|l| l.code == "unknown_metric"));
    assert!(
        letters
            .iter()
            .all(|l| l.source.starts_with(&format!("kafka:{topic}/")))
    );
    let rejected = scenario.rows("rejected_events").await;
    let sources: BTreeSet<&str> = rejected
        .iter()
        .map(|row| row.columns["source"].as_deref().unwrap())
        .collect();
    assert_eq!(sources.len(), poison.len());
    assert_plain_log(&first_log);
    assert_plain_log(&last_log);
}

/// Runs a collector of `broker` with the Kafka properties `properties` until it
/// exits (60 s at most) and returns its exit code and stderr.
fn run_collector_with(
    broker: &common::Broker,
    properties: &BTreeMap<String, String>,
    dir: &Path,
) -> (Option<i32>, String) {
    let mut config = String::from("[kafka.properties]\n");
    for (key, value) in properties {
        config.push_str(&format!("{key:?} = {value:?}\n"));
    }
    let config_file = dir.join("allot.toml");
    std::fs::write(&config_file, config).unwrap();
    let log = dir.join("collector.log");
    let mut command = Command::new(allot_bin());
    command
        .args([
            "ingest",
            "--brokers",
            &broker.bootstrap,
            "--topic",
            "any-topic",
        ])
        .args(["--group", "g", "--format", "json", "--lake"])
        .arg(dir.join("lake"))
        .arg("--config")
        .arg(config_file)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = CollectorProcess(command.spawn().expect("start collector"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the collector did not stop: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

/// The one `allot:` line of a failed run's stderr.
fn the_error_line(stderr: &str) -> &str {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("allot: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    errors[0]
}

#[test]
fn over_sasl_ssl_wrong_credentials_and_an_untrusted_ca_each_give_one_clear_error_line() {
    let broker = common::Broker::sasl_ssl();

    let dir = tempfile::tempdir().unwrap();
    let mut wrong_password = broker.properties.clone();
    wrong_password.insert("sasl.password".into(), "not-the-password".into());
    let (code, stderr) = run_collector_with(&broker, &wrong_password, dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    let line = the_error_line(&stderr);
    assert!(
        line.contains(&format!("cannot connect to Kafka at {}", broker.bootstrap)),
        "{line}"
    );
    assert!(line.to_lowercase().contains("authentication"), "{line}");
    assert!(!line.contains("not-the-password"), "{line}");

    // A CA that did not sign the broker's certificate.
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.crt");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=not the broker's CA", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let mut untrusted = broker.properties.clone();
    untrusted.insert(
        "ssl.ca.location".into(),
        other_ca.to_string_lossy().into_owned(),
    );
    let (code, stderr) = run_collector_with(&broker, &untrusted, dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    let line = the_error_line(&stderr);
    assert!(
        line.contains(&format!("cannot connect to Kafka at {}", broker.bootstrap)),
        "{line}"
    );
    assert!(line.contains("certificate verify failed"), "{line}");
}

/// Runs one of Kafka's own command-line tools against `broker` as its super user.
fn kafka_tool(broker: &common::Broker, tool: &str, args: &[&str]) {
    let libs = std::env::var("ALLOT_TEST_KAFKA_LIBS")
        .expect("ALLOT_TEST_KAFKA_LIBS is not set: run the tests with scripts/test");
    let admin = std::env::var("ALLOT_TEST_KAFKA_SASL_SSL_ADMIN")
        .expect("ALLOT_TEST_KAFKA_SASL_SSL_ADMIN is not set: run the tests with scripts/test");
    let output = Command::new("java")
        .arg("-cp")
        .arg(format!("{libs}/*"))
        .arg(format!("org.apache.kafka.tools.{tool}"))
        .args([
            "--bootstrap-server",
            &broker.bootstrap,
            "--command-config",
            &admin,
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{tool} {args:?}: {output:?}");
}

/// The value of counter `name` with label `outcome`, 0 while absent.
fn outcome_count(port: u16, name: &str, outcome: &str) -> u64 {
    scrape(port)
        .map(|samples| {
            counter_by(&samples, name, &["outcome"])
                .get(&vec![outcome.to_string()])
                .copied()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_that_refuses_writes_fails_the_flush_and_loses_nothing() {
    let _serial = common::serial().await;
    // A missing dead-letter topic stops the collector at start, naming it.
    let scenario = Scenario::on(common::Broker::sasl_ssl(), "refuse", 1, &[]).await;
    let (broker, topic, lake) = (&scenario.broker, &scenario.topic, &scenario.lake);
    let dlq_topic = format!("{topic}.dlq");
    let dir = &scenario.dir;
    let log = dir.path().join("missing.log");
    let mut missing = start_logging_collector(&scenario, &[], &log);
    let status = missing.wait().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = the_error_line(&stderr);
    assert!(
        line.contains(&format!("{dlq_topic} does not exist")),
        "{line}"
    );
    assert!(line.contains("kafka.dlq = false"), "{line}");

    // The topic exists, but the collector's user may not write to it (an ACL
    // naming the topic ends "everything is allowed" for it: allow the rest).
    broker.create_topic(&dlq_topic, 1).await;
    let allow = [
        "--allow-principal",
        "User:allot",
        "--operation",
        "All",
        "--topic",
        dlq_topic.as_str(),
    ];
    kafka_tool(
        broker,
        "AclCommand",
        &[&["--add", "--force"][..], &allow].concat(),
    );
    let deny = [
        "--deny-principal",
        "User:allot",
        "--operation",
        "Write",
        "--topic",
        dlq_topic.as_str(),
    ];
    kafka_tool(
        broker,
        "AclCommand",
        &[&["--add", "--force"][..], &deny].concat(),
    );
    let good = |i: usize| {
        (
            format!("k{i}"),
            format!(
                r#"{{"event_id":"g{i}","tenant_id":"acme","ts":"2026-04-01T00:00:00Z","metric":"compute_seconds","value":{i}}}"#
            ),
        )
    };
    let poison: Vec<(String, String)> = (0..5).map(poison_event).collect();
    let mut payloads: Vec<(String, String)> = (0..100).map(good).collect();
    payloads.extend(poison.iter().cloned());
    scenario.produce(payloads).await;

    let port = free_port();
    let metrics_listen = format!("127.0.0.1:{port}");
    let log = dir.path().join("collector.log");
    let mut command = scenario.collector_command(&[]);
    command
        .args(["--metrics-listen", &metrics_listen])
        .stderr(std::fs::File::create(&log).unwrap());
    let collector = CollectorProcess(command.spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(90);
    while outcome_count(port, "allot_delta_commits_total", "failed") < 2 {
        assert!(
            Instant::now() < deadline,
            "no failed flush: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(outcome_count(port, "allot_dead_letters_total", "failed") >= 2);
    // No flush landed: no offset recorded, no event in the lake.
    assert_eq!(
        outcome_count(port, "allot_delta_commits_total", "committed"),
        0
    );
    let url = url::Url::from_directory_path(lake.join("usage_events")).unwrap();
    if let Ok(mut table) = DeltaTable::try_from_url(url).await
        && table.load().await.is_ok()
    {
        let snapshot = table.snapshot().unwrap();
        let recorded = snapshot
            .transaction_version(
                table.log_store().as_ref(),
                kafka_app_id(&scenario.group, topic, 0),
            )
            .await
            .unwrap();
        assert_eq!(
            recorded, None,
            "offsets recorded past undelivered dead letters"
        );
    }
    assert!(
        common::read_lake_table(lake, "usage_events")
            .await
            .is_empty()
    );
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("dead letter"), "{stderr}");

    // Once the topic accepts writes, everything arrives.
    kafka_tool(
        broker,
        "AclCommand",
        &[&["--remove", "--force"][..], &deny].concat(),
    );
    scenario.wait_for_zero_lag(Duration::from_secs(120)).await;
    collector.stop();
    let rows = scenario.rows("usage_events").await;
    assert_eq!(rows.len(), 100);
    let letters = read_dead_letters(broker, &dlq_topic, poison.len());
    let payloads: BTreeSet<&str> = letters.iter().map(|l| l.payload.as_str()).collect();
    let expected: BTreeSet<&str> = poison.iter().map(|(_, p)| p.as_str()).collect();
    assert_eq!(payloads, expected);
    assert_plain_log(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_on_two_days_written_by_two_collectors_count_once() {
    let _serial = common::serial().await;
    let scenario = Scenario::new("dedupwindow", 2).await;
    // No background compaction: the copies must reach the lake side by side.
    let env = [("ALLOT__INGEST__COMPACTION_INTERVAL", "\"0s\"")];
    let first = scenario.collector(&env);
    let second = scenario.collector(&env);
    // Let the group give one partition to each.
    tokio::time::sleep(Duration::from_secs(6)).await;
    // A producer that stamps `ts` when it sends retried across midnight, and the
    // retry went to the other partition: each collector writes one copy.
    let copy = |day: u32| {
        format!(
            r#"{{"event_id":"dup-1","tenant_id":"acme","ts":"2026-10-{day:02}T10:00:00Z","metric":"compute_seconds","value":3600}}"#
        )
    };
    produce_to_partitions(&scenario.topic, &[(0, copy(5)), (1, copy(6))]).await;
    scenario.wait_for_zero_lag(Duration::from_secs(120)).await;
    first.stop();
    second.stop();
    let rows = scenario.rows("usage_events").await;
    assert_eq!(rows.len(), 2, "each collector wrote its copy");

    let invoice = [
        "tenant_id,period,metric,unit,segment_start,segment_end,tier_from,tier_to,quantity,unit_price,amount,kind,adjusts,dimensions",
        "acme,2026-10,compute_seconds,vCPU-hour,2026-10-01T00:00:00Z,2026-11-01T00:00:00Z,,,1.000000000000,0.0400,0.04,usage,,",
        "acme,2026-10,subtotal,,,,,,,,0.04,,,",
        "acme,2026-10,discount,,,,,,,,0.00,,,",
        "acme,2026-10,total,,,,,,,,0.04,,,",
        "",
    ]
    .join("\n");
    let count = "SELECT count(*) AS n, sum(value) AS s FROM usage_events";
    let counted = "n,s\n1,3600.000000000\n";
    for stage in ["before compaction", "after compaction"] {
        assert_eq!(
            scenario.allot(&["invoice", "--month", "2026-10"]),
            invoice,
            "{stage}"
        );
        assert_eq!(scenario.allot(&["sql", count]), counted, "{stage}");
        assert_eq!(
            scenario.allot(&["sql", "--tenant", "acme", count]),
            counted,
            "{stage}"
        );
        scenario.allot(&["compact"]);
    }
    let rows = scenario.rows("usage_events").await;
    assert_eq!(rows.len(), 1, "compaction removed the second copy");
}

/// A collector given its group on the command line (none in the file): the
/// month's certificate records the offsets under that group, as the table
/// does, for every partition, and no compaction fence among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_records_the_offsets_of_a_command_line_group() {
    let _serial = common::serial().await;
    let mut scenario = Scenario::new("closegroup", 2).await;
    scenario.group = format!("{}-from-the-command-line", scenario.topic);
    let collector = scenario.collector(&[]);
    let events: Vec<(i32, String)> = (0..10)
        .map(|i| {
            (
                i % 2,
                format!(
                    r#"{{"event_id":"e{i}","tenant_id":"acme","ts":"2026-10-{:02}T10:00:00Z","metric":"compute_seconds","value":3600}}"#,
                    i + 1
                ),
            )
        })
        .collect();
    produce_to_partitions(&scenario.topic, &events).await;
    scenario.wait_for_zero_lag(Duration::from_secs(120)).await;
    collector.stop();
    scenario.allot(&["compact"]);
    scenario.allot(&["close", "--month", "2026-10"]);

    let location =
        allot_schemas::layout::LakeLocation::parse(scenario.lake.to_str().unwrap()).unwrap();
    let closings = allot_query::closing::closings(&location).await.unwrap();
    let closed = allot_query::closing::find_closing(&closings, "2026-10".parse().unwrap(), None)
        .expect("the month is closed");
    let expected: BTreeMap<String, i64> = (0..2)
        .map(|p| (kafka_app_id(&scenario.group, &scenario.topic, p), 4))
        .collect();
    assert_eq!(closed.txn_offsets, expected);
}
