//! Time facts every crate shares: microsecond units, and the UTC day of an instant
//! as a date and as Arrow `Date32` (days since 1970-01-01, the lake's `day`
//! partition value).
//!
//! ```
//! use allot_schemas::time::{MICROS_PER_DAY, date_of_epoch_days, epoch_day_of_micros};
//! assert_eq!(epoch_day_of_micros(-1), -1);
//! assert_eq!(epoch_day_of_micros(MICROS_PER_DAY), 1);
//! assert_eq!(date_of_epoch_days(1).unwrap().to_string(), "1970-01-02");
//! ```

use chrono::{DateTime, NaiveDate};

/// Microseconds in a second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in an hour: the grain of the counter rollups.
pub const MICROS_PER_HOUR: i64 = 3_600 * MICROS_PER_SECOND;
/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Days from 0001-01-01 (day 1 of the common era) to 1970-01-01.
const EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// The UTC day of an instant in microseconds, as days since the Unix epoch.
pub fn epoch_day_of_micros(ts_micros: i64) -> i32 {
    // Any RFC 3339 timestamp (years 0000–9999) is well inside i32 days.
    ts_micros.div_euclid(MICROS_PER_DAY) as i32
}

/// The UTC date of an instant in microseconds (`None` outside chrono's range).
pub fn date_of_micros(micros: i64) -> Option<NaiveDate> {
    DateTime::from_timestamp_micros(micros).map(|t| t.date_naive())
}

/// 00:00 UTC of `day`, in microseconds.
pub fn day_start_micros(day: NaiveDate) -> i64 {
    day.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

/// Days since 1970-01-01 of a date: its Arrow `Date32` value.
pub fn days_since_epoch(day: NaiveDate) -> i32 {
    i32::try_from(day_start_micros(day).div_euclid(MICROS_PER_DAY)).unwrap_or(i32::MAX)
}

/// The date of an Arrow `Date32` value (the inverse of [`days_since_epoch`];
/// `None` outside chrono's range).
pub fn date_of_epoch_days(days: i32) -> Option<NaiveDate> {
    NaiveDate::from_num_days_from_ce_opt(days.saturating_add(EPOCH_DAYS_FROM_CE))
}

/// The first instant a report may be asked about: 1970-01-01T00:00:00Z.
pub const EARLIEST_REPORT_MICROS: i64 = 0;

/// The end (exclusive) of the instants a report may be asked about:
/// 2262-01-01T00:00:00Z. The query engine computes in nanoseconds, whose `i64`
/// range ends in April 2262, and a report reaches a month past its instant.
pub const LATEST_REPORT_MICROS: i64 = 9_214_646_400 * MICROS_PER_SECOND;

/// Whether an event's `ts` is one every part of the pipeline can represent
/// (docs/reference.md#event-format): from 1970-01-01T00:00:00Z up to, not including,
/// 2262-01-01T00:00:00Z, the instants a report may be asked about. Outside
/// it the query engine's nanosecond timestamps overflow, and a stored row would
/// fail every rollup and compaction of its tenant-day.
///
/// ```
/// use allot_schemas::time::is_supported_event_ts;
/// assert!(is_supported_event_ts(0));
/// assert!(!is_supported_event_ts(-1));
/// assert!(is_supported_event_ts(9_214_646_399_999_999));
/// assert!(!is_supported_event_ts(9_214_646_400_000_000));
/// ```
pub fn is_supported_event_ts(ts_micros: i64) -> bool {
    (EARLIEST_REPORT_MICROS..LATEST_REPORT_MICROS).contains(&ts_micros)
}

/// Whether a UTC day lies within the instants of [`is_supported_event_ts`]: a
/// `day` partition outside it holds rows stored before ingest refused them.
///
/// ```
/// use allot_schemas::time::is_supported_event_day;
/// let day = |d: &str| d.parse().unwrap();
/// assert!(is_supported_event_day(day("1970-01-01")));
/// assert!(is_supported_event_day(day("2261-12-31")));
/// assert!(!is_supported_event_day(day("1600-02-29")));
/// assert!(!is_supported_event_day(day("2262-01-01")));
/// ```
pub fn is_supported_event_day(day: NaiveDate) -> bool {
    is_supported_event_ts(day_start_micros(day))
}

/// Parses the instant of a report (`--as-of`, `--from`, `?to=`…): RFC 3339, or
/// `YYYY-MM-DD` for 00:00 UTC that day, within the supported range; the error
/// says what is wrong with `text`.
///
/// ```
/// use allot_schemas::time::parse_report_instant;
/// assert_eq!(parse_report_instant("1970-01-02"), Ok(86_400_000_000));
/// assert_eq!(parse_report_instant("1970-01-01T01:00:00+01:00"), Ok(0));
/// assert!(parse_report_instant("9999-12-31").unwrap_err().contains("2261-12-31"));
/// assert!(parse_report_instant("soon").is_err());
/// ```
pub fn parse_report_instant(text: &str) -> Result<i64, String> {
    let micros = DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|ts| ts.timestamp_micros())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .map(day_start_micros)
        })
        .ok_or_else(|| {
            format!("{text:?} is not an RFC 3339 instant (2026-03-01T00:00:00Z) or a date")
        })?;
    if (EARLIEST_REPORT_MICROS..LATEST_REPORT_MICROS).contains(&micros) {
        Ok(micros)
    } else {
        Err(format!(
            "{text:?} is outside the supported range, 1970-01-01 to 2261-12-31"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_days_round_trip_through_dates() {
        for day in [
            "1970-01-01",
            "1969-12-31",
            "2026-02-28",
            "2028-02-29",
            "9999-12-31",
        ] {
            let date: NaiveDate = day.parse().unwrap();
            let days = days_since_epoch(date);
            assert_eq!(date_of_epoch_days(days), Some(date), "{day}");
            assert_eq!(epoch_day_of_micros(day_start_micros(date)), days, "{day}");
            assert_eq!(
                epoch_day_of_micros(day_start_micros(date) + MICROS_PER_DAY - 1),
                days
            );
            assert_eq!(date_of_micros(day_start_micros(date)), Some(date));
        }
        assert_eq!(date_of_epoch_days(i32::MAX), None);
    }
}
