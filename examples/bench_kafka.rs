//! Helper of `scripts/bench-ingest`: produces synthetic usage events to a topic,
//! reads a topic to its end with a bare rdkafka consumer (the peer the collector is
//! measured against), and waits until a lake records every offset of a topic.
//!
//! ```text
//! bench_kafka produce BROKERS TOPIC EVENTS PARTITIONS TENANTS
//! bench_kafka consume BROKERS TOPIC
//! bench_kafka wait-lake BROKERS TOPIC GROUP LAKE_DIR
//! ```

use std::time::{Duration, Instant};

use allot_schemas::lake::kafka_app_id;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["produce", brokers, topic, events, partitions, tenants] => runtime.block_on(produce(
            brokers,
            topic,
            events.parse().expect("events"),
            partitions.parse().expect("partitions"),
            tenants.parse().expect("tenants"),
        )),
        ["consume", brokers, topic] => consume(brokers, topic),
        ["wait-lake", brokers, topic, group, lake] => {
            runtime.block_on(wait_lake(brokers, topic, group, lake))
        }
        _ => {
            eprintln!("usage: bench_kafka produce|consume|wait-lake …");
            std::process::exit(2);
        }
    }
}

async fn produce(brokers: &str, topic: &str, events: u64, partitions: i32, tenants: u64) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin");
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&new_topic], &AdminOptions::new())
        .await
        .expect("create topic")
    {
        result.expect("topic created");
    }
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "50")
        .set("batch.size", "1000000")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .expect("producer");
    let start_micros: i64 = 1_772_323_200_000_000; // 2026-03-01T00:00:00Z
    let span_micros: i64 = 31 * 86_400_000_000;
    for i in 0..events {
        let tenant = i % tenants;
        let ts_micros = start_micros + (i as i64 * (span_micros / events as i64));
        let ts = chrono::DateTime::from_timestamp_micros(ts_micros)
            .expect("ts")
            .format("%Y-%m-%dT%H:%M:%S%.6fZ");
        let payload = format!(
            r#"{{"event_id":"e{i}","tenant_id":"t{tenant:04}","ts":"{ts}","metric":"compute_seconds","value":{}.{:09},"resource":"vm-{}","region":"eu-west-1","service":"api"}}"#,
            i % 5000,
            i % 1_000_000_000,
            i % 97
        );
        let key = format!("t{tenant:04}");
        let mut record = BaseRecord::to(topic).key(&key).payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, returned)) => {
                    record = returned;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
}

/// Reads every partition from the beginning to its high watermark; prints events/s.
fn consume(brokers: &str, topic: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-bare-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut remaining = std::collections::HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        remaining.insert(p, high);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let mut read = 0u64;
    while !remaining.is_empty() {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("message");
            read += 1;
            use rdkafka::message::Message;
            if remaining
                .get(&message.partition())
                .is_some_and(|high| message.offset() + 1 >= *high)
            {
                remaining.remove(&message.partition());
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{read} {secs:.3}");
}

/// Waits until the lake's `txn` versions reach every partition's last offset.
async fn wait_lake(brokers: &str, topic: &str, group: &str, lake: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut high = Vec::new();
    for partition in metadata.topics()[0].partitions() {
        let (_, hw) = consumer
            .fetch_watermarks(topic, partition.id(), Duration::from_secs(10))
            .expect("watermarks");
        high.push((partition.id(), hw));
    }
    let url = url::Url::from_directory_path(std::path::Path::new(lake).join("usage_events"))
        .expect("lake path");
    loop {
        if let Ok(mut table) = deltalake::DeltaTable::try_from_url(url.clone()).await
            && table.load().await.is_ok()
        {
            let snapshot = table.snapshot().expect("snapshot");
            let mut done = true;
            for (partition, hw) in &high {
                let recorded = snapshot
                    .transaction_version(
                        table.log_store().as_ref(),
                        kafka_app_id(group, topic, *partition),
                    )
                    .await
                    .expect("txn");
                done &= recorded.map_or(0, |o| o + 1) >= *hw;
            }
            if done {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
