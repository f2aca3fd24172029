//! Query-string instants, refused with a 400 that names the parameter. A report's range and bucket are checked by
//! `allot_query::request`, for the CLI alike.

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
    }
}
