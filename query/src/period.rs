//! Billing periods: calendar months in UTC, `[start, end)`
//! (docs/reference.md#periods-and-precision).
//!
//! Instants are UTC microseconds since the Unix epoch, the lake's `ts` unit. A
//! [`Period`] parses and prints as `YYYY-MM` and knows its start, end and length,
//! the days it holds, and how to write an instant as RFC 3339 for reports.

use std::fmt;
use std::str::FromStr;

use allot_schemas::time::day_start_micros;
use chrono::{DateTime, Datelike, NaiveDate, SecondsFormat};

use crate::error::QueryError;

/// A calendar month in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

impl Period {
    /// The month `month` (1–12) of `year` (1–9999).
    pub fn new(year: i32, month: u32) -> Result<Self, QueryError> {
        let invalid = |reason: &str| QueryError::InvalidPeriod {
            text: format!("{year:04}-{month:02}"),
            reason: reason.to_string(),
        };
        if !(1..=9999).contains(&year) {
            return Err(invalid("the year must be between 0001 and 9999"));
        }
        if !(1..=12).contains(&month) {
            return Err(invalid("the month must be between 01 and 12"));
        }
        Ok(Period { year, month })
    }

    /// Parses `YYYY-MM` exactly: four digits, a dash, two digits.
    ///
    /// ```
    /// use allot_query::period::Period;
    /// let p: Period = "2026-02".parse().unwrap();
    /// assert_eq!(p.length_micros(), 28 * 86_400_000_000);
    /// assert!("2026-2".parse::<Period>().is_err());
    /// assert!("2026-13".parse::<Period>().is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        let bytes = text.as_bytes();
        let shaped = bytes.len() == 7
            && bytes[4] == b'-'
            && bytes[..4].iter().all(u8::is_ascii_digit)
            && bytes[5..].iter().all(u8::is_ascii_digit);
        if !shaped {
            return Err(QueryError::InvalidPeriod {
                text: text.to_string(),
                reason: "expected YYYY-MM".to_string(),
            });
        }
        let year: i32 = text[..4].parse().expect("four digits");
        let month: u32 = text[5..].parse().expect("two digits");
        Period::new(year, month).map_err(|err| match err {
            QueryError::InvalidPeriod { reason, .. } => QueryError::InvalidPeriod {
                text: text.to_string(),
                reason,
            },
            other => other,
        })
    }

    /// The period holding the instant `micros`.
    pub fn containing(micros: i64) -> Result<Self, QueryError> {
        let date = DateTime::from_timestamp_micros(micros)
            .ok_or_else(|| QueryError::InvalidInput(format!("instant {micros} is out of range")))?
            .date_naive();
        Period::new(date.year(), date.month())
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month, 1–12.
    pub fn month(self) -> u32 {
        self.month
    }

    /// The first day of the month.
    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated month")
    }

    /// The first day of the next month (the exclusive end, as a date).
    pub fn end_day(self) -> NaiveDate {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        NaiveDate::from_ymd_opt(year, month, 1).expect("valid month")
    }

    /// The next period.
    pub fn next(self) -> Period {
        let end = self.end_day();
        Period {
            year: end.year(),
            month: end.month(),
        }
    }

    /// The previous period.
    pub fn prev(self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Start instant (inclusive), UTC microseconds.
    pub fn start_micros(self) -> i64 {
        day_start_micros(self.first_day())
    }

    /// End instant (exclusive), UTC microseconds.
    pub fn end_micros(self) -> i64 {
        day_start_micros(self.end_day())
    }

    /// Length in microseconds (28, 29, 30 or 31 days).
    pub fn length_micros(self) -> i64 {
        self.end_micros() - self.start_micros()
    }

    /// Whether the instant lies in `[start, end)`.
    pub fn contains(self, micros: i64) -> bool {
        (self.start_micros()..self.end_micros()).contains(&micros)
    }

    /// The days of the month, in order.
    pub fn days(self) -> impl Iterator<Item = NaiveDate> {
        let end = self.end_day();
        self.first_day()
            .iter_days()
            .take_while(move |day| *day < end)
    }
}

impl FromStr for Period {
    type Err = QueryError;
    fn from_str(text: &str) -> Result<Self, QueryError> {
        Period::parse(text)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// An instant as RFC 3339 UTC text (`2026-01-15T00:00:00Z`; fractional seconds
/// only when present).
pub fn format_micros(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => micros.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allot_schemas::time::{MICROS_PER_DAY, MICROS_PER_SECOND};

    #[test]
    fn months_have_their_calendar_length() {
        let p = Period::parse("2026-01").unwrap();
        assert_eq!(p.to_string(), "2026-01");
        // 2026-01-01T00:00:00Z = 1767225600 s.
        assert_eq!(p.start_micros(), 1_767_225_600 * MICROS_PER_SECOND);
        assert_eq!(p.length_micros(), 31 * MICROS_PER_DAY);
        assert_eq!(
            p.end_micros(),
            Period::parse("2026-02").unwrap().start_micros()
        );
        assert_eq!(
            Period::parse("2024-02").unwrap().length_micros(),
            29 * MICROS_PER_DAY
        );
        assert_eq!(Period::parse("2026-04").unwrap().days().count(), 30);
        assert_eq!(
            Period::parse("2026-12").unwrap().next().to_string(),
            "2027-01"
        );
        assert!(p.contains(p.start_micros()));
        assert!(!p.contains(p.end_micros()));
        assert_eq!(Period::containing(p.end_micros() - 1).unwrap(), p);
        assert_eq!(format_micros(p.start_micros()), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn only_yyyy_mm_parses() {
        for bad in [
            "2026-1",
            "26-01",
            "2026-00",
            "2026-13",
            "2026/01",
            "2026-01-01",
            "",
            "abcd-ef",
        ] {
            let err = Period::parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
