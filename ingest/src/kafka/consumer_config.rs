//! The consumer's librdkafka settings that allot chooses (each overridable
//! in `[kafka.properties]`), with the measurements they were chosen by.

/// How often librdkafka reports statistics, from which lag is computed.
pub const STATISTICS_INTERVAL_MS: &str = "3000";

/// How long librdkafka waits before fetching again once its local queue was
/// full. Its default (1 s) makes a consumer that keeps up wait idle every time it
/// has drained the queue: it held a backlog to about 180,000 events/s here, while
/// 10 ms reads over 1.7 million a second. `kafka.properties` overrides it.
pub const FETCH_QUEUE_BACKOFF_MS: &str = "10";

/// What librdkafka may hold prefetched, in KiB of payload (its default is 64 MiB;
/// its bookkeeping about triples that in resident memory). With the short backoff
/// above, 8 MiB keeps the consumer fed: the benchmark ran as fast as with 32 MiB,
/// in about 80 MiB less memory.
pub const QUEUED_MAX_MESSAGES_KBYTES: &str = "8192";

/// The consumer's settings before `[kafka.properties]`: offsets are the lake's
/// (never committed automatically, nor reset past what it records), short
/// session and heartbeat so a dead collector's partitions move on quickly, and
/// the tuning above.
pub(super) fn consumer_defaults(group: &str) -> [(&'static str, &str); 10] {
    [
        ("group.id", group),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        ("partition.assignment.strategy", "range,roundrobin"),
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
        ("statistics.interval.ms", STATISTICS_INTERVAL_MS),
        ("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS),
        ("queued.max.messages.kbytes", QUEUED_MAX_MESSAGES_KBYTES),
    ]
}
