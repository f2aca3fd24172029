//! Query-string values: instants, bucket widths and months, each refused with a
//! 400 that names the parameter.

use allot_query::period::Period;
use allot_query::reports::MAX_BUCKET_MICROS;
use allot_schemas::config::HumanDuration;
use allot_schemas::time::parse_report_instant;

use crate::error::ApiError;

/// An instant: RFC 3339, or `YYYY-MM-DD` for 00:00 UTC that day, within the
/// range reports support.
pub fn instant(name: &str, text: &str) -> Result<i64, ApiError> {
    parse_report_instant(text).map_err(|problem| ApiError::BadRequest(format!("{name}: {problem}")))
}

/// An optional instant.
pub fn optional_instant(name: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|t| instant(name, t)).transpose()
}

/// A bucket width such as `1h` or `15m`, in microseconds, at most
/// [`MAX_BUCKET_MICROS`].
pub fn bucket(text: &str) -> Result<i64, ApiError> {
    let duration: HumanDuration = text
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("bucket: {text:?}: {e}")))?;
    match i64::try_from(duration.0.as_micros()) {
        Ok(micros) if (1..=MAX_BUCKET_MICROS).contains(&micros) => Ok(micros),
        _ => Err(ApiError::BadRequest(
            "bucket must be longer than 0 and at most 366d".to_string(),
        )),
    }
}

/// A billing month `YYYY-MM`.
pub fn month(text: &str) -> Result<Period, ApiError> {
    Ok(Period::parse(text)?)
}

/// `from < to`, or a 400.
pub fn ordered(from: i64, to: i64) -> Result<(), ApiError> {
    if from < to {
        Ok(())
    } else {
        Err(ApiError::BadRequest("to must be after from".to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_take_rfc3339_or_a_date() {
        assert_eq!(
            instant("from", "2026-03-01").unwrap(),
            1_772_323_200_000_000
        );
        assert_eq!(
            instant("from", "2026-03-01T00:00:00Z").unwrap(),
            1_772_323_200_000_000
        );
        assert!(instant("from", "yesterday").is_err());
        assert_eq!(bucket("1h").unwrap(), 3_600_000_000);
        assert!(bucket("0s").is_err());
        assert!(bucket("366d").is_ok());
        for wide in ["367d", "100000000d", "99999999999d"] {
            assert!(bucket(wide).is_err(), "{wide}");
        }
    }
}
