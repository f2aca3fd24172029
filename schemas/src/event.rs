//! Usage events: decoding native JSON v1 and structured CloudEvents, and validation.
//!
//! [`decode_event`] turns the raw bytes of one Kafka message or one JSON Lines line
//! into a [`UsageEvent`] or a [`Rejection`] carrying a stable [`ReasonCode`]. It
//! never panics and never goes through a binary float: `value` is read from the
//! JSON text by [`Decimal9::parse_json_number`]. Strings without escapes are
//! borrowed from the input, so the hot path allocates little.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::DateTime;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::config::MetricCatalog;
use crate::decimal::{Decimal9, DecimalError};
use crate::reason::ReasonCode;
use crate::tenant::{TENANT_ID_PATTERN, is_valid_tenant_id};
use crate::time::{epoch_day_of_micros, is_supported_event_ts};

/// Longest `event_id`, in bytes.
pub const MAX_EVENT_ID_BYTES: usize = 128;
/// Longest `resource`, in bytes.
pub const MAX_RESOURCE_BYTES: usize = 256;
/// Longest `region` or `service`, in bytes.
pub const MAX_REGION_SERVICE_BYTES: usize = 64;
/// Most entries in `labels`.
pub const MAX_LABELS: usize = 32;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 64;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
/// The only native schema version this build understands.
pub const SCHEMA_VERSION: i32 = 1;

/// An event's labels, `(key, value)` sorted by key, borrowed from the input
/// where they hold no escape.
pub type Labels<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

/// A validated usage event, borrowing its strings from the input where it can.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageEvent<'a> {
    /// With `tenant_id`, the identity of the event.
    pub event_id: Cow<'a, str>,
    /// The tenant, already checked against the tenant id charset.
    pub tenant_id: Cow<'a, str>,
    /// The event time in UTC microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// A metric of the catalog.
    pub metric: Cow<'a, str>,
    /// The exact value.
    pub value: Decimal9,
    /// The resource (volume, VM, …) that keys gauge series.
    pub resource: Option<Cow<'a, str>>,
    /// The region the usage happened in.
    pub region: Option<Cow<'a, str>>,
    /// The service that reported the usage.
    pub service: Option<Cow<'a, str>>,
    /// Free-form labels, sorted by key.
    pub labels: Labels<'a>,
    /// The schema version the event declared (always [`SCHEMA_VERSION`] today).
    pub schema_version: i32,
}

impl UsageEvent<'_> {
    /// The UTC day of `ts`, as days since the Unix epoch (Arrow `Date32`).
    pub fn day(&self) -> i32 {
        epoch_day_of_micros(self.ts_micros)
    }
}

/// An event that broke a rule, with what a person needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The stable reason code.
    pub reason: ReasonCode,
    /// A one-line explanation naming the field.
    pub message: String,
    /// The tenant, when one could be read and is valid.
    pub tenant_id: Option<String>,
}

impl Rejection {
    fn new(reason: ReasonCode, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
            tenant_id: None,
        }
    }
}

/// What validation depends on besides the event itself.
#[derive(Debug, Clone, Copy)]
pub struct DecodeContext<'c> {
    /// The metrics events may use.
    pub catalog: &'c MetricCatalog,
    /// The collector's clock, in UTC microseconds.
    pub now_micros: i64,
    /// How far ahead of `now_micros` an event may be.
    pub max_future_skew_micros: i64,
    /// Largest accepted event, in bytes.
    pub max_event_bytes: usize,
}

/// Every field allot reads, native and CloudEvents, as unparsed JSON.
///
/// Reading each field as a [`RawValue`] lets decoding classify a wrong type as
/// `invalid_type` instead of a generic JSON error.
#[derive(Deserialize)]
struct WireObject<'a> {
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow)]
    tenant_id: Option<&'a RawValue>,
    #[serde(borrow)]
    ts: Option<&'a RawValue>,
    #[serde(borrow)]
    metric: Option<&'a RawValue>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
    #[serde(borrow)]
    region: Option<&'a RawValue>,
    #[serde(borrow)]
    service: Option<&'a RawValue>,
    #[serde(borrow)]
    labels: Option<&'a RawValue>,
    #[serde(borrow)]
    schema_version: Option<&'a RawValue>,
    #[serde(borrow)]
    specversion: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    subject: Option<&'a RawValue>,
    #[serde(borrow)]
    time: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// A field's name (as the sender wrote it) and raw value.
type Field<'a> = (&'static str, Option<&'a RawValue>);

/// The logical fields of an event after the CloudEvents mapping.
struct EventFields<'a> {
    event_id: Field<'a>,
    tenant_id: Field<'a>,
    ts: Field<'a>,
    metric: Field<'a>,
    value: Field<'a>,
    resource: Field<'a>,
    region: Field<'a>,
    service: Field<'a>,
    labels: Field<'a>,
    schema_version: Field<'a>,
}

/// Decodes and validates one event from raw bytes.
///
/// ```
/// use allot_schemas::config::MetricCatalog;
/// use allot_schemas::event::{decode_event, DecodeContext};
/// let catalog = MetricCatalog::default();
/// let ctx = DecodeContext { catalog: &catalog, now_micros: i64::MAX / 2,
///     max_future_skew_micros: 0, max_event_bytes: 1 << 20 };
/// let event = decode_event(br#"{"event_id":"e1","tenant_id":"acme",
///     "ts":"2026-03-01T10:00:00Z","metric":"compute_seconds","value":1.5}"#, &ctx).unwrap();
/// assert_eq!(event.value.to_string(), "1.500000000");
/// ```
pub fn decode_event<'a>(
    bytes: &'a [u8],
    ctx: &DecodeContext<'_>,
) -> Result<UsageEvent<'a>, Rejection> {
    if bytes.len() > ctx.max_event_bytes {
        return Err(oversize_rejection(bytes.len(), ctx.max_event_bytes));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        Rejection::new(
            ReasonCode::InvalidUtf8,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let wire: WireObject<'a> = serde_json::from_str(text)
        .map_err(|e| Rejection::new(ReasonCode::InvalidJson, format!("not a JSON object: {e}")))?;
    let fields = map_fields(wire)?;
    let tenant_id = read_tenant_id(fields.tenant_id)?;
    validate_fields(fields, tenant_id, ctx)
}

/// The rejection of an event of `len` bytes when at most `max` are accepted.
pub fn oversize_rejection(len: usize, max: usize) -> Rejection {
    Rejection::new(
        ReasonCode::EventTooLarge,
        format!("event is {len} bytes, more than the maximum of {max}"),
    )
}

/// Applies the CloudEvents mapping (docs/reference.md#cloudevents-input) when `specversion`
/// is present.
fn map_fields(wire: WireObject<'_>) -> Result<EventFields<'_>, Rejection> {
    let Some(specversion) = wire.specversion else {
        return Ok(EventFields {
            event_id: ("event_id", wire.event_id),
            tenant_id: ("tenant_id", wire.tenant_id),
            ts: ("ts", wire.ts),
            metric: ("metric", wire.metric),
            value: ("value", wire.value),
            resource: ("resource", wire.resource),
            region: ("region", wire.region),
            service: ("service", wire.service),
            labels: ("labels", wire.labels),
            schema_version: ("schema_version", wire.schema_version),
        });
    };
    if specversion.get() != "\"1.0\"" {
        return Err(Rejection::new(
            ReasonCode::InvalidCloudEvent,
            "CloudEvents specversion must be \"1.0\"",
        ));
    }
    let data: WireObject<'_> = match wire.data {
        None => return Err(missing("data")),
        Some(raw) if raw.get().starts_with('{') => {
            serde_json::from_str(raw.get()).map_err(|e| {
                Rejection::new(
                    ReasonCode::InvalidCloudEvent,
                    format!("CloudEvents data: {e}"),
                )
            })?
        }
        Some(_) => {
            return Err(Rejection::new(
                ReasonCode::InvalidCloudEvent,
                "CloudEvents data must be a JSON object",
            ));
        }
    };
    Ok(EventFields {
        event_id: ("id", wire.id),
        tenant_id: ("subject", wire.subject),
        ts: ("time", wire.time),
        metric: ("data.metric", data.metric),
        value: ("data.value", data.value),
        resource: ("data.resource", data.resource),
        region: ("data.region", data.region),
        service: ("data.service", data.service),
        labels: ("data.labels", data.labels),
        schema_version: ("data.schema_version", data.schema_version),
    })
}

/// Reads and checks the tenant id first, so later rejections can name the tenant.
fn read_tenant_id<'a>(field: Field<'a>) -> Result<Cow<'a, str>, Rejection> {
    let tenant_id = required_str(field)?;
    if !is_valid_tenant_id(&tenant_id) {
        return Err(Rejection::new(
            ReasonCode::InvalidTenantId,
            format!(
                "{} must match {TENANT_ID_PATTERN}, got {}",
                field.0,
                quote_prefix(&tenant_id)
            ),
        ));
    }
    Ok(tenant_id)
}

fn validate_fields<'a>(
    fields: EventFields<'a>,
    tenant_id: Cow<'a, str>,
    ctx: &DecodeContext<'_>,
) -> Result<UsageEvent<'a>, Rejection> {
    let attach_tenant = |mut rejection: Rejection| {
        rejection.tenant_id = Some(tenant_id.to_string());
        rejection
    };
    let event_id = read_event_id(fields.event_id).map_err(attach_tenant)?;
    let ts_micros = read_timestamp(fields.ts, ctx).map_err(attach_tenant)?;
    let metric = read_metric(fields.metric, ctx.catalog).map_err(attach_tenant)?;
    let value = read_value(fields.value).map_err(attach_tenant)?;
    let resource =
        optional_bounded_str(fields.resource, MAX_RESOURCE_BYTES).map_err(attach_tenant)?;
    let region =
        optional_bounded_str(fields.region, MAX_REGION_SERVICE_BYTES).map_err(attach_tenant)?;
    let service =
        optional_bounded_str(fields.service, MAX_REGION_SERVICE_BYTES).map_err(attach_tenant)?;
    let labels = read_labels(fields.labels).map_err(attach_tenant)?;
    let schema_version = read_schema_version(fields.schema_version).map_err(attach_tenant)?;
    Ok(UsageEvent {
        event_id,
        tenant_id,
        ts_micros,
        metric,
        value,
        resource,
        region,
        service,
        labels,
        schema_version,
    })
}

fn missing(name: &str) -> Rejection {
    Rejection::new(ReasonCode::MissingField, format!("{name} is required"))
}

fn wrong_type(name: &str, expected: &str) -> Rejection {
    Rejection::new(
        ReasonCode::InvalidType,
        format!("{name} must be {expected}"),
    )
}

fn too_long(name: &str, len: usize, max: usize) -> Rejection {
    Rejection::new(
        ReasonCode::FieldTooLong,
        format!("{name} is {len} bytes, more than {max}"),
    )
}

/// A short, safe rendering of a user string for error messages.
fn quote_prefix(text: &str) -> String {
    let prefix: String = text.chars().take(40).collect();
    let ellipsis = if prefix.len() < text.len() { "…" } else { "" };
    format!("{prefix:?}{ellipsis}")
}

/// Reads a JSON string, borrowing it when it has no escapes.
fn json_str<'a>(raw: &'a RawValue) -> Option<Cow<'a, str>> {
    let text = raw.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

fn required_str<'a>((name, raw): Field<'a>) -> Result<Cow<'a, str>, Rejection> {
    let raw = raw.ok_or_else(|| missing(name))?;
    json_str(raw).ok_or_else(|| wrong_type(name, "a string"))
}

fn optional_bounded_str<'a>(
    (name, raw): Field<'a>,
    max_bytes: usize,
) -> Result<Option<Cow<'a, str>>, Rejection> {
    let Some(raw) = raw else { return Ok(None) };
    let text = json_str(raw).ok_or_else(|| wrong_type(name, "a string"))?;
    if text.len() > max_bytes {
        return Err(too_long(name, text.len(), max_bytes));
    }
    Ok(Some(text))
}

fn read_event_id<'a>(field: Field<'a>) -> Result<Cow<'a, str>, Rejection> {
    let event_id = required_str(field)?;
    if event_id.is_empty() {
        return Err(Rejection::new(
            ReasonCode::InvalidEventId,
            format!("{} must not be empty", field.0),
        ));
    }
    if event_id.len() > MAX_EVENT_ID_BYTES {
        return Err(too_long(field.0, event_id.len(), MAX_EVENT_ID_BYTES));
    }
    if event_id.chars().any(char::is_control) {
        return Err(Rejection::new(
            ReasonCode::InvalidEventId,
            format!("{} must not contain control characters", field.0),
        ));
    }
    Ok(event_id)
}

fn read_timestamp(field: Field<'_>, ctx: &DecodeContext<'_>) -> Result<i64, Rejection> {
    let text = required_str(field)?;
    let ts_micros = parse_timestamp_micros(&text).ok_or_else(|| {
        Rejection::new(
            ReasonCode::InvalidTimestamp,
            format!(
                "{} must be RFC 3339 with an offset (Z or ±hh:mm), got {}",
                field.0,
                quote_prefix(&text)
            ),
        )
    })?;
    // Both readers (the fast one and chrono) end here: neither lets an instant
    // the rest of the pipeline cannot hold through.
    if !is_supported_event_ts(ts_micros) {
        return Err(Rejection::new(
            ReasonCode::InvalidTimestamp,
            format!(
                "{} {} is outside the supported range, 1970-01-01T00:00:00Z to 2261-12-31T23:59:59Z",
                field.0,
                quote_prefix(&text)
            ),
        ));
    }
    if ts_micros > ctx.now_micros.saturating_add(ctx.max_future_skew_micros) {
        return Err(Rejection::new(
            ReasonCode::FutureTimestamp,
            format!(
                "{} {} is more than the allowed skew ahead of the collector's clock",
                field.0,
                quote_prefix(&text)
            ),
        ));
    }
    Ok(ts_micros)
}

/// Parses an RFC 3339 timestamp with a mandatory offset into UTC microseconds.
/// Digits below the microsecond are truncated.
///
/// The shape nearly every sender writes (`YYYY-MM-DDTHH:MM:SS`, up to nine
/// fractional digits, `Z` or `±hh:mm`) is read by [`parse_common_rfc3339`] at
/// a fraction of chrono's cost; anything else (a lowercase `t`, a leap second,
/// ten fractional digits, …) goes to chrono, which decides. A property test
/// holds the two to the same answer.
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    parse_common_rfc3339(text).or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|ts| ts.timestamp_micros())
    })
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±hh:mm)` with every field in range
/// into UTC microseconds; `None` for anything else, valid or not.
fn parse_common_rfc3339(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |at: usize, len: usize| -> Option<i64> {
        let slice = b.get(at..at + len)?;
        slice.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let punct = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(punct(4, b'-') && punct(7, b'-') && punct(10, b'T') && punct(13, b':') && punct(16, b':'))
    {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 2)?, digits(8, 2)?);
    let (hour, minute, second) = (digits(11, 2)?, digits(14, 2)?, digits(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut at = 19;
    let mut micros = 0;
    if punct(at, b'.') {
        let len = b[at + 1..]
            .iter()
            .take_while(|d| d.is_ascii_digit())
            .count();
        if !(1..=9).contains(&len) {
            return None;
        }
        let kept = len.min(6);
        micros = digits(at + 1, kept)? * 10i64.pow((6 - kept) as u32);
        at += 1 + len;
    }
    let offset_seconds = match b.get(at..)? {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (hours, minutes) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3_600 + minutes * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_seconds;
    Some(seconds * 1_000_000 + micros)
}

/// Days in `month` (1–12) of the proleptic Gregorian `year`.
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn read_metric<'a>(field: Field<'a>, catalog: &MetricCatalog) -> Result<Cow<'a, str>, Rejection> {
    let metric = required_str(field)?;
    if !catalog.contains(&metric) {
        return Err(Rejection::new(
            ReasonCode::UnknownMetric,
            format!(
                "{} {} is not in the metric catalog",
                field.0,
                quote_prefix(&metric)
            ),
        ));
    }
    Ok(metric)
}

fn read_value((name, raw): Field<'_>) -> Result<Decimal9, Rejection> {
    let raw = raw.ok_or_else(|| missing(name))?;
    Decimal9::parse_json_number(raw.get()).map_err(|e| match e {
        DecimalError::NotANumber => wrong_type(name, "a JSON number"),
        DecimalError::Negative | DecimalError::TooLarge => Rejection::new(
            ReasonCode::InvalidValue,
            format!("{name} must satisfy 0 ≤ value < 10^20: {e}"),
        ),
    })
}

/// A label key, borrowed from the input unless it holds escapes.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct LabelKey<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for LabelKey<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> serde::de::Visitor<'de> for KeyVisitor {
            type Value = Cow<'de, str>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(text))
            }

            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(text.to_owned()))
            }
        }
        deserializer.deserialize_str(KeyVisitor).map(LabelKey)
    }
}

fn read_labels<'a>((name, raw): Field<'a>) -> Result<Labels<'a>, Rejection> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    // A key given twice keeps its last value, as JSON parsers commonly do.
    let entries: BTreeMap<LabelKey<'a>, &'a RawValue> =
        serde_json::from_str(raw.get()).map_err(|_| wrong_type(name, "an object of strings"))?;
    if entries.len() > MAX_LABELS {
        return Err(Rejection::new(
            ReasonCode::TooManyLabels,
            format!(
                "{name} has {} entries, more than {MAX_LABELS}",
                entries.len()
            ),
        ));
    }
    entries
        .into_iter()
        .map(|(LabelKey(key), value)| {
            if key.len() > MAX_LABEL_KEY_BYTES {
                return Err(too_long(
                    &format!("{name} key"),
                    key.len(),
                    MAX_LABEL_KEY_BYTES,
                ));
            }
            let value =
                json_str(value).ok_or_else(|| wrong_type(&format!("{name}.{key}"), "a string"))?;
            if value.len() > MAX_LABEL_VALUE_BYTES {
                return Err(too_long(
                    &format!("{name}.{key}"),
                    value.len(),
                    MAX_LABEL_VALUE_BYTES,
                ));
            }
            Ok((key, value))
        })
        .collect()
}

fn read_schema_version((name, raw): Field<'_>) -> Result<i32, Rejection> {
    let Some(raw) = raw else {
        return Ok(SCHEMA_VERSION);
    };
    let version: i64 =
        serde_json::from_str(raw.get()).map_err(|_| wrong_type(name, "an integer"))?;
    if version != i64::from(SCHEMA_VERSION) {
        return Err(Rejection::new(
            ReasonCode::UnsupportedSchemaVersion,
            format!(
                "{name} {version} is not supported (this build reads version {SCHEMA_VERSION})"
            ),
        ));
    }
    Ok(SCHEMA_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_780_000_000_000_000; // 2026-05-28

    fn decode(text: &str) -> Result<UsageEvent<'_>, Rejection> {
        decode_bytes(text.as_bytes())
    }

    fn decode_bytes(bytes: &[u8]) -> Result<UsageEvent<'_>, Rejection> {
        static CATALOG: std::sync::OnceLock<MetricCatalog> = std::sync::OnceLock::new();
        let ctx = DecodeContext {
            catalog: CATALOG.get_or_init(MetricCatalog::default),
            now_micros: NOW,
            max_future_skew_micros: crate::time::MICROS_PER_DAY,
            max_event_bytes: 1 << 20,
        };
        decode_event(bytes, &ctx)
    }

    fn reason(text: &str) -> ReasonCode {
        decode(text).expect_err("should be rejected").reason
    }

    fn event(fields: &str) -> String {
        format!(
            r#"{{"event_id":"e1","tenant_id":"acme","ts":"2026-03-01T10:00:00Z","metric":"compute_seconds","value":2{fields}}}"#
        )
    }

    #[test]
    fn decodes_native_event_with_every_field() {
        let text = r#"{"event_id":"e-1","tenant_id":"acme_1","ts":"2026-03-01T10:00:00.123456789+02:00",
            "metric":"storage_bytes","value":1073741824.5,"resource":"vol-1","region":"eu-west-1",
            "service":"db","labels":{"b":"2","a":"\u00e9"},"schema_version":1,"extra":[1,2]}"#;
        let ev = decode(text).unwrap();
        assert_eq!(ev.event_id, "e-1");
        assert_eq!(ev.tenant_id, "acme_1");
        assert_eq!(ev.ts_micros, 1_772_352_000_123_456);
        assert_eq!(ev.metric, "storage_bytes");
        assert_eq!(ev.value.to_string(), "1073741824.500000000");
        assert_eq!(ev.resource.as_deref(), Some("vol-1"));
        assert_eq!(ev.region.as_deref(), Some("eu-west-1"));
        assert_eq!(ev.service.as_deref(), Some("db"));
        assert_eq!(
            ev.labels,
            vec![
                (Cow::from("a"), Cow::from("é")),
                (Cow::from("b"), Cow::from("2"))
            ]
        );
        assert_eq!(ev.day(), 20513);
    }

    #[test]
    fn decodes_structured_cloudevent() {
        let text = r#"{"specversion":"1.0","id":"ce-1","source":"/vm","type":"usage","subject":"acme",
            "time":"2026-03-01T10:00:00Z","datacontenttype":"application/json",
            "data":{"metric":"egress_bytes","value":10,"region":"us"}}"#;
        let ev = decode(text).unwrap();
        assert_eq!(
            (ev.event_id.as_ref(), ev.tenant_id.as_ref()),
            ("ce-1", "acme")
        );
        assert_eq!(ev.metric, "egress_bytes");
        assert_eq!(ev.region.as_deref(), Some("us"));
        assert_eq!(
            reason(
                r#"{"specversion":"0.3","id":"x","subject":"acme","time":"2026-03-01T10:00:00Z","data":{}}"#
            ),
            ReasonCode::InvalidCloudEvent
        );
        assert_eq!(
            reason(
                r#"{"specversion":"1.0","id":"x","subject":"acme","time":"2026-03-01T10:00:00Z","data":"x"}"#
            ),
            ReasonCode::InvalidCloudEvent
        );
        assert_eq!(
            reason(
                r#"{"specversion":"1.0","id":"x","time":"2026-03-01T10:00:00Z","data":{"metric":"egress_bytes","value":1}}"#
            ),
            ReasonCode::MissingField
        );
    }

    #[test]
    fn classifies_bad_input() {
        assert_eq!(reason("{not json"), ReasonCode::InvalidJson);
        assert_eq!(reason("[1,2]"), ReasonCode::InvalidJson);
        assert_eq!(reason(&event(r#","value":3"#)), ReasonCode::InvalidJson);
        assert_eq!(reason(r#"{"tenant_id":"acme"}"#), ReasonCode::MissingField);
        assert_eq!(reason(&event(r#","resource":{}"#)), ReasonCode::InvalidType);
        assert_eq!(reason(&event(r#","labels":[1]"#)), ReasonCode::InvalidType);
        assert_eq!(
            reason(&event(r#","labels":{"a":1}"#)),
            ReasonCode::InvalidType
        );
        assert_eq!(
            reason(&event(r#","schema_version":"1""#)),
            ReasonCode::InvalidType
        );
        assert_eq!(
            reason(&event(r#","schema_version":2"#)),
            ReasonCode::UnsupportedSchemaVersion
        );
        let long_region = format!(r#","region":"{}""#, "r".repeat(65));
        assert_eq!(reason(&event(&long_region)), ReasonCode::FieldTooLong);
        let many: Vec<String> = (0..33).map(|i| format!(r#""k{i}":"v""#)).collect();
        assert_eq!(
            reason(&event(&format!(r#","labels":{{{}}}"#, many.join(",")))),
            ReasonCode::TooManyLabels
        );
    }

    #[test]
    fn rejects_bad_tenant_ids_and_names_valid_tenants() {
        for tenant in ["../x", "A", "a/b", "a b", "", "é", "-a", &"a".repeat(64)] {
            let text = event("").replace("\"acme\"", &format!("{tenant:?}"));
            let rejection = decode(&text).unwrap_err();
            assert_eq!(rejection.reason, ReasonCode::InvalidTenantId, "{tenant}");
            assert_eq!(rejection.tenant_id, None);
        }
        let rejection = decode(
            &event(r#","metric":"gpu_hours""#).replace(r#""metric":"compute_seconds","#, ""),
        )
        .unwrap_err();
        assert_eq!(rejection.reason, ReasonCode::UnknownMetric);
        assert_eq!(rejection.tenant_id.as_deref(), Some("acme"));
    }

    #[test]
    fn checks_values_and_timestamps() {
        let with = |field: &str, value: &str| {
            event("").replace(
                &format!(
                    r#""{field}":{}"#,
                    if field == "value" {
                        "2"
                    } else {
                        "\"2026-03-01T10:00:00Z\""
                    }
                ),
                &format!(r#""{field}":{value}"#),
            )
        };
        assert_eq!(reason(&with("value", "-1")), ReasonCode::InvalidValue);
        assert_eq!(reason(&with("value", "1e400")), ReasonCode::InvalidValue);
        assert_eq!(reason(&with("value", "\"NaN\"")), ReasonCode::InvalidType);
        assert_eq!(reason(&with("value", "NaN")), ReasonCode::InvalidJson);
        assert_eq!(
            decode(&with("value", "0.1234567895"))
                .unwrap()
                .value
                .to_string(),
            "0.123456790"
        );
        assert_eq!(
            reason(&with("ts", "\"2026-03-01T10:00:00\"")),
            ReasonCode::InvalidTimestamp
        );
        assert_eq!(
            reason(&with("ts", "\"2026-05-30T00:00:01Z\"")),
            ReasonCode::FutureTimestamp
        );
        assert!(decode(&with("ts", "\"2026-05-28T00:00:00Z\"")).is_ok());
    }

    #[test]
    fn accepts_only_timestamps_every_stage_can_hold() {
        // A clock far ahead, so only the range decides.
        let catalog = MetricCatalog::default();
        let ctx = DecodeContext {
            catalog: &catalog,
            now_micros: i64::MAX / 2,
            max_future_skew_micros: crate::time::MICROS_PER_DAY,
            max_event_bytes: 1 << 20,
        };
        let outcome = |ts: &str| {
            let text = event("").replace("2026-03-01T10:00:00Z", ts);
            decode_event(text.as_bytes(), &ctx).map(|e| e.ts_micros)
        };
        for (ts, accepted) in [
            // Read by the fast reader.
            ("1600-02-29T12:00:00Z", false),
            ("0000-01-01T00:00:00Z", false),
            ("1969-12-31T23:59:59.999999Z", false),
            ("1970-01-01T00:00:00Z", true),
            ("1970-01-01T00:30:00+01:00", false),
            ("1969-12-31T23:30:00-01:00", true),
            ("2261-12-31T23:59:59Z", true),
            ("2262-01-01T00:00:00Z", false),
            ("2262-04-12T00:00:00Z", false),
            ("9999-12-31T23:59:59Z", false),
            // Read by chrono: a lowercase `t`, a leap second, ten digits.
            ("1600-02-29t12:00:00z", false),
            ("1677-09-21T00:12:43.1234567890Z", false),
            ("2261-12-31t23:59:59Z", true),
            ("2261-06-30T23:59:60Z", true),
            // A leap second at the very end reads as 2262-01-01T00:00:00Z.
            ("2261-12-31T23:59:60Z", false),
            ("2262-01-01t00:00:00z", false),
        ] {
            match outcome(ts) {
                Ok(_) => assert!(accepted, "{ts} accepted"),
                Err(rejection) => {
                    assert!(!accepted, "{ts} rejected: {}", rejection.message);
                    assert_eq!(rejection.reason, ReasonCode::InvalidTimestamp, "{ts}");
                    assert!(rejection.message.contains("2261-12-31"), "{ts}");
                }
            }
        }
    }

    #[test]
    fn rejects_invalid_utf8_and_oversize_events() {
        let mut bytes = event("").into_bytes();
        bytes[20] = 0xff;
        assert_eq!(
            decode_bytes(&bytes).unwrap_err().reason,
            ReasonCode::InvalidUtf8
        );
        let huge = event(&format!(r#","pad":"{}""#, "x".repeat(2 << 20)));
        assert_eq!(reason(&huge), ReasonCode::EventTooLarge);
    }

    mod timestamps {
        //! The fast timestamp reader against chrono's, which stays the judge.
        use proptest::prelude::*;

        use super::super::parse_timestamp_micros;

        fn chrono_micros(text: &str) -> Option<i64> {
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|ts| ts.timestamp_micros())
        }

        #[test]
        fn reads_the_common_shape_like_chrono() {
            for text in [
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:02.024114Z",
                "2024-02-29T23:59:59.999999999+05:30",
                "1969-12-31T23:59:59.5-00:30",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59.1234567-23:59",
            ] {
                assert!(super::super::parse_common_rfc3339(text).is_some(), "{text}");
                assert_eq!(parse_timestamp_micros(text), chrono_micros(text), "{text}");
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(5_000))]

            #[test]
            fn near_timestamps_read_as_chrono_reads_them(
                text in r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{0,11})?(Z|z|[+-][0-9]{2}:[0-9]{2}|[+-][0-9]{4})?",
            ) {
                prop_assert_eq!(parse_timestamp_micros(&text), chrono_micros(&text));
            }

            #[test]
            fn valid_timestamps_read_as_chrono_reads_them(
                (year, month, day) in (0i32..=9999, 1u32..=12, 1u32..=31),
                (hour, minute, second) in (0u32..=23, 0u32..=59, 0u32..=60),
                fraction in "(\\.[0-9]{1,10})?",
                offset in "Z|[+-]((0[0-9])|(1[0-9])|(2[0-4])):[0-5][0-9]",
            ) {
                let text = format!(
                    "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{offset}"
                );
                prop_assert_eq!(parse_timestamp_micros(&text), chrono_micros(&text));
            }
        }
    }

    mod labels {
        //! Labels read with borrowed keys against an owned-key map, the way
        //! they were read before.
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::{decode, event};

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn labels_read_as_an_owned_map_reads_them(
                entries in proptest::collection::vec(
                    ("[a-c]{1,2}|[a-c]\\\\u00e9|\\\\\"q", "[a-z0-9]{0,3}|x\\\\ny"),
                    0..6,
                ),
            ) {
                let body: Vec<String> =
                    entries.iter().map(|(k, v)| format!(r#""{k}":"{v}""#)).collect();
                let labels = format!("{{{}}}", body.join(","));
                let text = event(&format!(r#","labels":{labels}"#));
                let expected: BTreeMap<String, String> = serde_json::from_str(&labels).unwrap();
                let decoded = decode(&text).unwrap();
                let decoded: Vec<(String, String)> = decoded
                    .labels
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                prop_assert_eq!(decoded, expected.into_iter().collect::<Vec<_>>());
            }
        }
    }

    mod fuzz {
        //! The decoder on malformed input: it must reject, never panic.
        use proptest::prelude::*;

        use super::decode_bytes;

        /// A valid event with `value` as its value's JSON text.
        fn event_with_value(value: &str) -> Vec<u8> {
            format!(
                r#"{{"event_id":"e1","tenant_id":"acme","ts":"2026-03-01T10:00:00Z","metric":"compute_seconds","value":{value},"labels":{{"k":"v"}}}}"#
            )
            .into_bytes()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2_000))]

            #[test]
            fn arbitrary_bytes_are_rejected_without_a_panic(
                bytes in proptest::collection::vec(any::<u8>(), 0..400),
            ) {
                let _ = decode_bytes(&bytes);
            }

            #[test]
            fn damaged_events_are_rejected_without_a_panic(
                value in r"-?[0-9]{0,45}(\.[0-9]{0,45})?([eE][-+]?[0-9]{1,5})?",
                at in any::<prop::sample::Index>(),
                byte in any::<u8>(),
                keep in any::<prop::sample::Index>(),
            ) {
                let mut bytes = event_with_value(&value);
                // Undamaged, an accepted value is the exact decimal of its text,
                // rounded half-to-even to 9 places (docs/reference.md#event-format).
                if let Ok(event) = decode_bytes(&bytes) {
                    let parsed: bigdecimal::BigDecimal = value.parse().unwrap();
                    let expected =
                        parsed.with_scale_round(9, bigdecimal::RoundingMode::HalfEven);
                    let decoded: bigdecimal::BigDecimal = event.value.to_string().parse().unwrap();
                    prop_assert_eq!(expected, decoded);
                }
                let at = at.index(bytes.len());
                bytes[at] = byte;
                bytes.truncate(keep.index(bytes.len() + 1));
                let _ = decode_bytes(&bytes);
            }
        }
    }
}
