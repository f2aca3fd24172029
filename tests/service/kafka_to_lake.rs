//! End to end against the real Kafka broker: events produced with an rdkafka
//! producer are read back with an rdkafka consumer and written to the lake by the
//! same assembler and writer that `allot ingest --from-file` uses.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use allot_ingest::assemble::EventAssembler;
use allot_ingest::writer::LakeWriter;
use allot_schemas::clock::SystemClock;
use allot_schemas::config::Config;
use allot_schemas::layout::{LakeLocation, Provenance};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

use common::scenario::Scenario;

const PARTITIONS: i32 = 3;
const GOOD_EVENTS: usize = 300;

fn good_event(i: usize) -> String {
    format!(
        r#"{{"event_id":"k{i}","tenant_id":"t{}","ts":"2026-03-0{}T10:00:00Z","metric":"compute_seconds","value":{}.25}}"#,
        i % 4,
        1 + i % 3,
        i
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_a_real_broker_land_in_the_lake_once() {
    let _serial = common::serial().await;
    let scenario = Scenario::new("e2e-lake", PARTITIONS).await;
    let topic = &scenario.topic;
    let producer: FutureProducer = scenario
        .broker
        .client()
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut payloads: Vec<String> = (0..GOOD_EVENTS).map(good_event).collect();
    payloads.push("{not json".to_string());
    payloads.push(r#"{"event_id":"x","tenant_id":"../x","ts":"2026-03-01T10:00:00Z","metric":"compute_seconds","value":1}"#.to_string());
    // A producer retry: the same event sent twice as two messages.
    payloads.push(good_event(7));
    for (i, payload) in payloads.iter().enumerate() {
        let key = format!("{}", i % 4);
        producer
            .send(
                FutureRecord::to(topic).payload(payload).key(&key),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }

    let consumer: BaseConsumer = scenario
        .broker
        .client()
        .set("group.id", format!("{topic}-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic.as_str()]).expect("subscribe");

    let lake = LakeLocation::parse(scenario.lake.to_str().unwrap()).unwrap();
    let config = Config::default();
    let mut assembler = EventAssembler::new(&config, std::sync::Arc::new(SystemClock));
    let mut received = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while received < payloads.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "only {received} of {} messages read back",
            payloads.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.expect("message");
        let source = Provenance::Kafka {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
        };
        assembler.push(message.payload().unwrap_or_default(), source);
        received += 1;
    }

    let mut writer = LakeWriter::for_collector(&lake, allot_lake::dedup::DedupWindow::default())
        .await
        .unwrap();
    let outcome = writer.append(assembler.take().unwrap()).await.unwrap();
    assert_eq!(outcome.written, GOOD_EVENTS as u64);
    assert_eq!(outcome.duplicates, 1);
    assert_eq!(outcome.rejected_written, 2);

    let rows = scenario.rows("usage_events").await;
    assert_eq!(rows.len(), GOOD_EVENTS);
    let ids: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.partition["tenant_id"].clone(),
                r.columns["event_id"].clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(ids.len(), GOOD_EVENTS);
    for row in &rows {
        let i: usize = row.columns["event_id"].as_ref().unwrap()[1..]
            .parse()
            .unwrap();
        assert_eq!(row.partition["tenant_id"], format!("t{}", i % 4));
        assert_eq!(row.partition["day"], format!("2026-03-0{}", 1 + i % 3));
        assert_eq!(
            row.columns["value"].as_deref(),
            Some(format!("{i}.250000000").as_str())
        );
        let source = row.columns["source"].as_deref().unwrap();
        assert!(source.starts_with(&format!("kafka:{topic}/")), "{source}");
    }
    let rejected = scenario.rows("rejected_events").await;
    let reasons: BTreeMap<String, usize> = rejected.iter().fold(BTreeMap::new(), |mut acc, r| {
        *acc.entry(r.columns["reason"].clone().unwrap()).or_default() += 1;
        acc
    });
    assert_eq!(
        reasons,
        BTreeMap::from([("invalid_json".into(), 1), ("invalid_tenant_id".into(), 1)])
    );
}
