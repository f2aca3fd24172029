//! An alert channel whose receiver is down for 30 s (docs/reference.md#alert-delivery):
//! `allot serve` retries it with exponential backoff and delivers the firing
//! once the receiver is back, under the same idempotency key, while the other
//! channel of the rule got its copy at once. In the service tier for its 30 s.

use crate::common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::ServeProcess;
use common::alerts::{
    ARRIVES_WITHIN, Receiver, alert_lake_with, alerts_of, assert_signed, by_key, use_compute,
    webhook,
};

/// How long the receiver stays down.
const DOWN_FOR: Duration = Duration::from_secs(30);

#[test]
fn a_receiver_down_for_30_seconds_gets_the_alert_after_backoff() {
    let live = Receiver::start();
    let flaky = Receiver::start();
    flaky.up.store(false, Ordering::SeqCst);
    let down_since = Instant::now();
    let channels = format!(
        "{}{}",
        webhook("hook", &live.url("live")),
        webhook("flaky", &flaky.url("flaky"))
    );
    // Backoff from 1 s doubling to 8 s: about 6 attempts in 30 s, where
    // retrying at every 200 ms tick would make 150.
    let lake = alert_lake_with(
        &channels,
        "\"flaky\", \"hook\"",
        "retry_initial = \"1s\"\nretry_max = \"8s\"",
    );
    let config = std::fs::read_to_string(lake.config()).unwrap();
    let config = config.replace("retry_initial = \"500ms\"\nretry_max = \"1s\"\n", "");
    std::fs::write(lake.config(), config).unwrap();
    use_compute(&lake, "acme", "d0", "1");
    let server = ServeProcess::start(&lake.config(), Some(&lake.root()));
    server.wait_ready(ARRIVES_WITHIN);
    use_compute(&lake, "acme", "d1", "990");

    // The other channel is not held up: its copy arrives while the flaky
    // receiver is still down.
    live.wait_for("the live channel's firing", |r| !r.is_empty());
    assert!(!flaky.up.load(Ordering::SeqCst));
    assert!(flaky.received().is_empty());

    std::thread::sleep(DOWN_FOR.saturating_sub(down_since.elapsed()));
    let refused = *flaky.refused.lock().unwrap();
    assert!(
        (2..=12).contains(&refused),
        "attempts while down, with backoff: {refused}"
    );
    let finance = server.token("finance", None);
    let pending = alerts_of(&server, &finance)[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["channel"] == "flaky")
        .unwrap()
        .clone();
    assert_eq!(pending["outcome"], "pending", "{pending}");

    // Up again: delivered at the next attempt (at most retry_max later),
    // signed, under the firing's key, once; the live channel got one copy.
    flaky.up.store(true, Ordering::SeqCst);
    let got = flaky.wait_for("the firing after the outage", |r| !r.is_empty());
    assert_eq!(got[0].key(), "q90/acme/1");
    assert_signed(&got[0]);
    assert_eq!(got[0].body, live.received()[0].body);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        by_key(&flaky.received()),
        BTreeMap::from([("q90/acme/1".to_string(), 1)])
    );
    assert_eq!(live.received().len(), 1);
    let deadline = Instant::now() + ARRIVES_WITHIN;
    loop {
        let alerts = alerts_of(&server, &finance);
        let delivery = alerts[0]["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["channel"] == "flaky")
            .unwrap()
            .clone();
        if delivery["outcome"] == "delivered" {
            let refused = *flaky.refused.lock().unwrap();
            assert!(
                delivery["attempts"].as_u64().unwrap() > u64::from(refused),
                "{refused} refused: {delivery}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "not recorded: {delivery}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
