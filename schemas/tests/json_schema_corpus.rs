//! The JSON Schema in `schemas/event-v1.schema.json` and the Rust decoder agree:
//! every sample of `testdata/corpus/` is accepted by both or rejected by both, and
//! the decoder's reason code is the one in the sample's file name.

use allot_schemas::config::MetricCatalog;
use allot_schemas::event::{DecodeContext, decode_event};
use allot_schemas::reason::ReasonCode;

/// Expected outcome of one corpus sample, from its file name.
#[derive(Debug, PartialEq)]
enum Expected {
    Accept,
    Reject(ReasonCode),
}

fn expected_from_name(name: &str) -> Expected {
    let mut parts = name.split("--");
    match parts.next() {
        Some("accept") => Expected::Accept,
        Some("reject") => {
            let code = parts.next().expect("reject--<code>--<name>.json");
            Expected::Reject(
                ReasonCode::from_code(code)
                    .unwrap_or_else(|| panic!("unknown code {code} in {name}")),
            )
        }
        _ => panic!("corpus file {name} is neither accept-- nor reject--"),
    }
}

#[test]
fn schema_and_decoder_agree_on_the_corpus() {
    let schema: serde_json::Value =
        serde_json::from_str(allot_schemas::EVENT_V1_JSON_SCHEMA).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let catalog = MetricCatalog::default();
    let ctx = DecodeContext {
        catalog: &catalog,
        now_micros: allot_schemas::event::parse_timestamp_micros("2026-11-28T00:00:00Z").unwrap(),
        max_future_skew_micros: allot_schemas::time::MICROS_PER_DAY,
        max_event_bytes: 1 << 20,
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/corpus");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(
        entries.len() >= 50,
        "corpus has only {} samples",
        entries.len()
    );
    let mut disagreements = Vec::new();
    for path in &entries {
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(path).unwrap();
        let expected = expected_from_name(name);
        let schema_accepts = serde_json::from_slice::<serde_json::Value>(&bytes)
            .map(|instance| validator.is_valid(&instance))
            .unwrap_or(false);
        let decoded = decode_event(&bytes, &ctx).map(|_| ()).map_err(|r| r.reason);
        let decoder_outcome = match decoded {
            Ok(()) => Expected::Accept,
            Err(code) => Expected::Reject(code),
        };
        if schema_accepts != (expected == Expected::Accept) {
            disagreements.push(format!("{name}: schema accepts = {schema_accepts}"));
        }
        if decoder_outcome != expected {
            disagreements.push(format!("{name}: decoder gives {decoder_outcome:?}"));
        }
    }
    assert!(
        disagreements.is_empty(),
        "disagreements:\n{}",
        disagreements.join("\n")
    );
}
