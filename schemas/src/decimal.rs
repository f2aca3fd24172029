//! Exact event values: a fixed-point decimal with nine fractional digits.
//!
//! An event's `value` goes from the JSON text to the lake's `Decimal128(38, 9)`
//! column without ever passing through a binary float. [`Decimal9`] holds the value
//! scaled by 10^9 in an `i128`, parses JSON number text directly (exponents
//! included) and rounds extra fractional digits half-to-even.

use std::fmt;
use std::str::FromStr;

use bigdecimal::BigDecimal;

/// Number of fractional digits kept for event values.
pub const VALUE_SCALE: u32 = 9;

/// 10^9, the scale factor of [`Decimal9`].
const SCALE_FACTOR: i128 = 1_000_000_000;

/// Exclusive upper bound of an event value, scaled: 10^20 × 10^9.
const MAX_SCALED_EXCLUSIVE: i128 = 100_000_000_000_000_000_000 * SCALE_FACTOR;

/// Number of decimal digits of [`MAX_SCALED_EXCLUSIVE`] minus one: any scaled value
/// with more digits than this is out of range.
const MAX_SCALED_DIGITS: usize = 29;

/// A non-negative event value below 10^20 with nine fractional digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Decimal9(i128);

/// Why a number could not become a [`Decimal9`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// The text is not a JSON number.
    NotANumber,
    /// The number is below zero.
    Negative,
    /// The number is 10^20 or more.
    TooLarge,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecimalError::NotANumber => "value is not a JSON number",
            DecimalError::Negative => "value is negative",
            DecimalError::TooLarge => "value is 10^20 or more",
        })
    }
}

impl Decimal9 {
    /// The value scaled by 10^9, as stored in a `Decimal128(38, 9)` column.
    pub fn scaled(self) -> i128 {
        self.0
    }

    /// Builds a value from its scaled representation, checking the range.
    pub fn from_scaled(scaled: i128) -> Result<Self, DecimalError> {
        if scaled < 0 {
            Err(DecimalError::Negative)
        } else if scaled >= MAX_SCALED_EXCLUSIVE {
            Err(DecimalError::TooLarge)
        } else {
            Ok(Decimal9(scaled))
        }
    }

    /// Parses JSON number text (`-?int(.frac)?([eE][+-]?exp)?`) exactly, rounding
    /// digits past the ninth fractional one half-to-even.
    ///
    /// ```
    /// use allot_schemas::decimal::Decimal9;
    /// assert_eq!(Decimal9::parse_json_number("1.5e3").unwrap().to_string(), "1500.000000000");
    /// assert_eq!(Decimal9::parse_json_number("0.0000000025").unwrap().to_string(), "0.000000002");
    /// assert_eq!(Decimal9::parse_json_number("0.0000000035").unwrap().to_string(), "0.000000004");
    /// ```
    pub fn parse_json_number(text: &str) -> Result<Self, DecimalError> {
        let number = JsonNumber::split(text).ok_or(DecimalError::NotANumber)?;
        let digits = number.significant_digits();
        if digits.is_empty() {
            return Ok(Decimal9(0));
        }
        if number.negative {
            return Err(DecimalError::Negative);
        }
        // value = digits × 10^shift, scaled value = digits × 10^(shift + 9).
        let shift = number
            .exponent
            .saturating_sub(number.fraction.len() as i64)
            .saturating_add(i64::from(VALUE_SCALE));
        if shift >= 0 {
            let total_digits = (digits.len() as i64).saturating_add(shift);
            if total_digits > MAX_SCALED_DIGITS as i64 {
                return Err(DecimalError::TooLarge);
            }
            let scaled = accumulate(digits) * 10i128.pow(shift as u32);
            return Decimal9::from_scaled(scaled);
        }
        let dropped = shift.unsigned_abs();
        if dropped > digits.len() as u64 {
            // Every significant digit sits below the first dropped position, so the
            // value is under half a unit of the last kept digit.
            return Ok(Decimal9(0));
        }
        let kept_len = digits.len() - dropped as usize;
        if kept_len > MAX_SCALED_DIGITS {
            return Err(DecimalError::TooLarge);
        }
        let (kept, rest) = digits.split_at(kept_len);
        let mut scaled = accumulate(kept);
        if rounds_up(rest, scaled) {
            scaled += 1;
        }
        Decimal9::from_scaled(scaled)
    }
}

/// Decides half-to-even rounding given the dropped digits and the kept value.
fn rounds_up(dropped: &[u8], kept: i128) -> bool {
    match dropped.first() {
        Some(b'6'..=b'9') => true,
        Some(b'5') => dropped[1..].iter().any(|&d| d != b'0') || kept % 2 == 1,
        _ => false,
    }
}

/// Folds ASCII digits (at most 29 of them) into an integer.
fn accumulate(digits: &[u8]) -> i128 {
    digits
        .iter()
        .fold(0i128, |acc, &d| acc * 10 + i128::from(d - b'0'))
}

/// The parts of a JSON number's text.
struct JsonNumber {
    negative: bool,
    /// Integer digits followed by fraction digits, as one digit string.
    mantissa: Vec<u8>,
    /// The fraction digits (a suffix of `mantissa`), kept for their count.
    fraction: Vec<u8>,
    exponent: i64,
}

impl JsonNumber {
    /// Splits text following the JSON number grammar; `None` for anything else.
    fn split(text: &str) -> Option<JsonNumber> {
        let bytes = text.as_bytes();
        let mut pos = 0;
        let negative = bytes.first() == Some(&b'-');
        if negative {
            pos += 1;
        }
        let int_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let integer = &bytes[int_start..pos];
        if integer.is_empty() || (integer.len() > 1 && integer[0] == b'0') {
            return None;
        }
        let mut fraction: &[u8] = &[];
        if bytes.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            fraction = &bytes[start..pos];
            if fraction.is_empty() {
                return None;
            }
        }
        let mut exponent: i64 = 0;
        if matches!(bytes.get(pos), Some(b'e' | b'E')) {
            pos += 1;
            let exp_negative = match bytes.get(pos) {
                Some(b'-') => {
                    pos += 1;
                    true
                }
                Some(b'+') => {
                    pos += 1;
                    false
                }
                _ => false,
            };
            let start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                exponent = exponent
                    .saturating_mul(10)
                    .saturating_add(i64::from(bytes[pos] - b'0'));
                pos += 1;
            }
            if pos == start {
                return None;
            }
            if exp_negative {
                exponent = -exponent;
            }
        }
        if pos != bytes.len() {
            return None;
        }
        let mut mantissa = integer.to_vec();
        mantissa.extend_from_slice(fraction);
        Some(JsonNumber {
            negative,
            mantissa,
            fraction: fraction.to_vec(),
            exponent,
        })
    }

    /// The mantissa without leading zeros (empty when the number is zero).
    fn significant_digits(&self) -> &[u8] {
        let first = self
            .mantissa
            .iter()
            .position(|&d| d != b'0')
            .unwrap_or(self.mantissa.len());
        &self.mantissa[first..]
    }
}

impl fmt::Display for Decimal9 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let integer = self.0 / SCALE_FACTOR;
        let fraction = self.0 % SCALE_FACTOR;
        write!(f, "{integer}.{fraction:09}")
    }
}

/// Parses `-?digits(.digits)?` exactly: the one decimal spelling of the config
/// and of costs files (no exponent, no `+`, no bare `.5`).
///
/// ```
/// use allot_schemas::decimal::parse_plain_decimal;
/// assert_eq!(parse_plain_decimal("-12.50").unwrap().to_string(), "-12.50");
/// assert!(parse_plain_decimal("1e3").is_none() && parse_plain_decimal(".5").is_none());
/// ```
pub fn parse_plain_decimal(text: &str) -> Option<BigDecimal> {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, "0"));
    let digits_only = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(int) || !digits_only(frac) {
        return None;
    }
    BigDecimal::from_str(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<String, DecimalError> {
        Decimal9::parse_json_number(text).map(|d| d.to_string())
    }

    #[test]
    fn parses_plain_numbers_exactly() {
        assert_eq!(parse("0").unwrap(), "0.000000000");
        assert_eq!(parse("-0").unwrap(), "0.000000000");
        assert_eq!(parse("12").unwrap(), "12.000000000");
        assert_eq!(parse("0.1").unwrap(), "0.100000000");
        assert_eq!(parse("123.456789012").unwrap(), "123.456789012");
        assert_eq!(
            parse("99999999999999999999.999999999").unwrap(),
            "99999999999999999999.999999999"
        );
    }

    #[test]
    fn applies_exponents() {
        assert_eq!(parse("1.5e3").unwrap(), "1500.000000000");
        assert_eq!(parse("15E-1").unwrap(), "1.500000000");
        assert_eq!(parse("1e19").unwrap(), "10000000000000000000.000000000");
        assert_eq!(parse("1e-9").unwrap(), "0.000000001");
        assert_eq!(parse("1e-400").unwrap(), "0.000000000");
        assert_eq!(parse("0e999999999999999999999").unwrap(), "0.000000000");
    }

    #[test]
    fn rounds_half_to_even_past_nine_digits() {
        assert_eq!(parse("1.0000000005").unwrap(), "1.000000000");
        assert_eq!(parse("1.0000000015").unwrap(), "1.000000002");
        assert_eq!(parse("1.00000000050001").unwrap(), "1.000000001");
        assert_eq!(parse("1.0000000004999").unwrap(), "1.000000000");
        assert_eq!(parse("1.123456789512").unwrap(), "1.123456790");
        assert_eq!(parse("0.0000000005").unwrap(), "0.000000000");
        assert_eq!(parse("0.00000000051").unwrap(), "0.000000001");
        assert_eq!(parse("0.00000000005").unwrap(), "0.000000000");
    }

    #[test]
    fn rejects_out_of_range() {
        assert_eq!(parse("-1"), Err(DecimalError::Negative));
        assert_eq!(parse("-0.0000000001"), Err(DecimalError::Negative));
        assert_eq!(parse("1e20"), Err(DecimalError::TooLarge));
        assert_eq!(parse("100000000000000000000"), Err(DecimalError::TooLarge));
        assert_eq!(parse("1e400"), Err(DecimalError::TooLarge));
        assert_eq!(
            parse("99999999999999999999.9999999995"),
            Err(DecimalError::TooLarge)
        );
    }

    #[test]
    fn rejects_non_numbers() {
        for text in [
            "", "-", "01", "1.", ".5", "1e", "NaN", "Infinity", "1 ", "0x10", "\"1\"",
        ] {
            assert_eq!(parse(text), Err(DecimalError::NotANumber), "{text:?}");
        }
    }
}
