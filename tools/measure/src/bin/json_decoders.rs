//! Measures JSON decoders on a file of real events, one thread.
//!
//! For each line of a JSON Lines file (e.g. `scripts/gen-events` output) it
//! times, as the median of three rounds:
//! - `serde_json` splitting the object into its fields as unparsed raw values,
//!   which is how [`decode_event`] starts;
//! - `sonic-rs` (SIMD) doing the same split into its lazy raw values;
//! - the whole of [`decode_event`]: split, then every field read and checked.
//!
//! Only the split differs between the two libraries: every field is then read
//! from its raw text by allot's own code (decimals never through a float). So
//! the split's share of the whole and the two split times say what a SIMD
//! decoder could save; `docs/decisions/0015-json-decoder-serde-json.md`
//! records the figures.
//!
//! ```text
//! json_decoders events.jsonl [LINES]
//! ```
//! `scripts/bench-codecs` runs it on the benchmarks' events.

use std::time::{Duration, Instant};

use allot_schemas::config::MetricCatalog;
use allot_schemas::event::{DecodeContext, decode_event};
use serde::Deserialize;

/// The fields `decode_event` looks at, as `serde_json` raw values.
#[derive(Deserialize)]
#[allow(dead_code)]
struct SerdeFields<'a> {
    #[serde(borrow)]
    event_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    tenant_id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    ts: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    metric: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    value: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    resource: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    region: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    service: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    labels: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    schema_version: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    specversion: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    subject: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    time: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    data: Option<&'a serde_json::value::RawValue>,
}

/// The same fields as `sonic-rs` lazy (unparsed) values.
#[derive(Deserialize)]
#[allow(dead_code)]
struct SonicFields<'a> {
    #[serde(borrow)]
    event_id: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    tenant_id: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    ts: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    metric: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    value: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    resource: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    region: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    service: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    labels: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    schema_version: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    specversion: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    id: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    subject: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    time: Option<sonic_rs::LazyValue<'a>>,
    #[serde(borrow)]
    data: Option<sonic_rs::LazyValue<'a>>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: json_decoders FILE.jsonl [LINES]");
        std::process::exit(2);
    };
    let limit: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let text = std::fs::read(&path).unwrap_or_else(|err| {
        eprintln!("json_decoders: {path}: {err}");
        std::process::exit(2);
    });
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .take(limit)
        .collect();
    let catalog = MetricCatalog::default();
    let ctx = DecodeContext {
        catalog: &catalog,
        now_micros: i64::MAX / 2,
        max_future_skew_micros: 0,
        max_event_bytes: 1 << 20,
    };
    println!("{} lines", lines.len());
    let serde_split = median_per_line(&lines, |line| {
        serde_json::from_slice::<SerdeFields<'_>>(line).is_ok()
    });
    let sonic_split = median_per_line(&lines, |line| {
        sonic_rs::from_slice::<SonicFields<'_>>(line).is_ok()
    });
    let whole = median_per_line(&lines, |line| decode_event(line, &ctx).is_ok());
    println!("serde_json split  {serde_split:>7.0} ns/event");
    println!("sonic-rs split    {sonic_split:>7.0} ns/event");
    println!("decode_event      {whole:>7.0} ns/event (serde_json split included)");
}

/// The median over three rounds of the time per line of `decode`; also checks
/// that every round accepted the same number of lines.
fn median_per_line(lines: &[&[u8]], decode: impl Fn(&[u8]) -> bool) -> f64 {
    let mut times: Vec<Duration> = Vec::new();
    let mut accepted = None;
    for _ in 0..3 {
        let started = Instant::now();
        let ok = lines.iter().filter(|line| decode(line)).count();
        times.push(started.elapsed());
        assert!(accepted.is_none_or(|n| n == ok), "rounds disagree");
        accepted = Some(ok);
    }
    times.sort();
    times[1].as_nanos() as f64 / lines.len().max(1) as f64
}
