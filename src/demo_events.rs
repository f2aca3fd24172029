//! The synthetic usage of `allot demo`: tenants with a daily and weekly rhythm,
//! one noisy neighbour, and a few malformed events.
//!
//! Everything is a deterministic function of the tenant, the hour and a counter, so
//! a demo started twice tells the same story. Values are written as exact decimal
//! text built from integers.

use chrono::{DateTime, Datelike, Timelike, Utc};

/// The tenant that turns noisy in the demo.
pub const NOISY_TENANT: &str = "t07-hungry";

/// Names of the demo's tenants: `t01-…` to `tNN-…`, one of them [`NOISY_TENANT`].
pub fn tenant_names(count: usize) -> Vec<String> {
    const WORDS: [&str; 24] = [
        "acme",
        "globex",
        "initech",
        "umbrella",
        "hooli",
        "stark",
        "hungry",
        "wayne",
        "wonka",
        "tyrell",
        "cyberdyne",
        "soylent",
        "aperture",
        "gringotts",
        "oceanic",
        "vandelay",
        "duff",
        "nakatomi",
        "massive",
        "pied",
        "monarch",
        "virtucon",
        "weyland",
        "zorg",
    ];
    (0..count)
        .map(|i| format!("t{:02}-{}", i + 1, WORDS[i % WORDS.len()]))
        .collect()
}

/// A small, fast, deterministic mixer (SplitMix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn tenant_seed(tenant: &str) -> u64 {
    tenant.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Relative load (in percent) at an instant: busy in working hours, quieter at
/// night and at weekends.
fn rhythm_percent(at: DateTime<Utc>) -> u64 {
    let hour = at.hour();
    let daily = match hour {
        0..=5 => 35,
        6..=8 => 70,
        9..=17 => 100,
        18..=21 => 75,
        _ => 45,
    };
    let weekend = matches!(at.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun);
    if weekend { daily * 55 / 100 } else { daily }
}

/// Whether the noisy tenant is misbehaving at `at`: during the last two hours
/// before `noisy_until` (the demo's start) and for the rest of the demo.
fn is_noisy(tenant: &str, at: DateTime<Utc>, noisy_from: DateTime<Utc>) -> bool {
    tenant == NOISY_TENANT && at >= noisy_from
}

/// Whether a tenant sends malformed events now and then (a few of them do).
pub fn is_sloppy(tenant: &str) -> bool {
    tenant_seed(tenant).is_multiple_of(5)
}

/// The events of one tenant for `minutes` minutes starting at `minute`, as one
/// compute-seconds and one egress-bytes event (their usage summed over the
/// minutes), a storage sample per volume when the minute is a multiple of 10, and,
/// for a sloppy tenant, one malformed event in about `bad_every` calls (never when
/// `bad_every` is 0). Event ids are unique per tenant and minute.
pub fn minute_events(
    tenant: &str,
    minute: DateTime<Utc>,
    minutes: u64,
    noisy_from: DateTime<Utc>,
    bad_every: u64,
) -> Vec<String> {
    let seed = tenant_seed(tenant);
    let stamp = minute.timestamp() / 60;
    let noise = mix(seed ^ stamp as u64);
    let size = 1 + seed % 5; // tenants differ in size, 1× to 5×
    let load = rhythm_percent(minute) * size;
    let spike = if is_noisy(tenant, minute, noisy_from) {
        40
    } else {
        1
    };
    let ts = minute.format("%Y-%m-%dT%H:%M:%SZ");
    let id = |kind: &str| format!("{tenant}-{stamp}-{kind}");
    let mut events = Vec::new();

    // vCPU seconds used in the minute: around 0.6 × load, with jitter and decimals.
    let compute_millis = minutes * ((600 * load * spike) + noise % (200 * load));
    events.push(format!(
        r#"{{"event_id":"{}","tenant_id":"{tenant}","ts":"{ts}","metric":"compute_seconds","value":{}.{:03},"region":"eu-west-1","service":"api"}}"#,
        id("cpu"),
        compute_millis / 1000,
        compute_millis % 1000
    ));
    let egress = minutes * ((2_000_000 * load * spike) + (noise >> 20) % (1_000_000 * load));
    events.push(format!(
        r#"{{"event_id":"{}","tenant_id":"{tenant}","ts":"{ts}","metric":"egress_bytes","value":{egress},"region":"{}","service":"cdn"}}"#,
        id("egress"),
        if seed.is_multiple_of(2) { "eu-west-1" } else { "us-east-1" }
    ));
    if minute.minute().is_multiple_of(10) {
        for volume in 0..2 {
            let gib = 20 * size + volume * 5 + (minute.timestamp() as u64 / 86_400) % 7;
            events.push(format!(
                r#"{{"event_id":"{}","tenant_id":"{tenant}","ts":"{ts}","metric":"storage_bytes","value":{},"resource":"vol-{volume}"}}"#,
                id(&format!("vol{volume}")),
                gib * 1_073_741_824
            ));
        }
    }
    if bad_every > 0 && is_sloppy(tenant) && (noise >> 7).is_multiple_of(bad_every) {
        let bad = match noise % 4 {
            0 => format!(
                r#"{{"event_id":"{}","tenant_id":"{tenant}","ts":"{ts}","metric":"compute_seconds","value":-5}}"#,
                id("bad")
            ),
            1 => format!(
                r#"{{"event_id":"{}","tenant_id":"{tenant}","ts":"{ts}","metric":"gpu_hours","value":1}}"#,
                id("bad")
            ),
            2 => format!(
                r#"{{"event_id":"{}","tenant_id":"{tenant}","ts":"yesterday","metric":"compute_seconds","value":1}}"#,
                id("bad")
            ),
            _ => format!(
                r#"{{"event_id":"{}","tenant_id":"{tenant}","metric":"egress_bytes""#,
                id("bad")
            ),
        };
        events.push(bad);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_deterministic_and_the_noisy_tenant_spikes() {
        let at = DateTime::parse_from_rfc3339("2026-03-04T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let calm_from = at + chrono::Duration::hours(1);
        let noisy_from = at - chrono::Duration::hours(1);
        assert_eq!(
            minute_events(NOISY_TENANT, at, 1, calm_from, 0),
            minute_events(NOISY_TENANT, at, 1, calm_from, 0)
        );
        // Whole vCPU seconds of the minute's compute event.
        let seconds = |events: Vec<String>| -> u64 {
            let event: serde_json::Value = serde_json::from_str(&events[0]).unwrap();
            let text = event["value"].to_string();
            text.split('.').next().unwrap().parse().unwrap()
        };
        let calm = seconds(minute_events(NOISY_TENANT, at, 1, calm_from, 0));
        let noisy = seconds(minute_events(NOISY_TENANT, at, 1, noisy_from, 0));
        assert!(noisy > calm * 10, "{calm} → {noisy}");
        let names = tenant_names(20);
        assert_eq!(names.len(), 20);
        assert!(names.contains(&NOISY_TENANT.to_string()));
        assert!(
            names.iter().any(|t| is_sloppy(t)),
            "some tenants send bad events"
        );
        assert!(!is_sloppy(NOISY_TENANT));
    }
}
