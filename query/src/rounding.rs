//! The rounding rules of docs/reference.md#periods-and-precision, in one place.
//!
//! Billing quantities are rounded half-to-even to [`QUANTITY_SCALE`] (12) decimal
//! places, exactly once; money is rounded half away from zero to [`MONEY_SCALE`]
//! (2) places, only where the reference says; shares are shown with [`SHARE_SCALE`] (6)
//! places. Every division here is exact: numerator and denominator become
//! integers and the quotient is rounded from the true remainder, so no
//! intermediate precision limit (such as `BigDecimal`'s default 100 digits) can
//! move a result across a rounding tie.

use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::{BigInt, Sign};
use bigdecimal::{One, Signed, Zero};

/// Decimal places of a billing quantity.
pub const QUANTITY_SCALE: i64 = 12;
/// Decimal places of an amount of money.
pub const MONEY_SCALE: i64 = 2;
/// Decimal places of a displayed share.
pub const SHARE_SCALE: i64 = 6;

/// How a value is brought to a number of decimal places.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// To the nearest; a tie goes to the even neighbour (quantities, shares).
    HalfEven,
    /// To the nearest; a tie goes away from zero (money).
    HalfAwayFromZero,
    /// Towards negative infinity (largest-remainder allocation).
    Floor,
}

/// `10^exp` as an integer.
pub(crate) fn pow10(exp: u64) -> BigInt {
    let mut result = BigInt::one();
    let ten = BigInt::from(10u8);
    for _ in 0..exp {
        result *= &ten;
    }
    result
}

/// Rounds the exact quotient of two integers to an integer.
fn div_int(num: &BigInt, den: &BigInt, mode: Rounding) -> BigInt {
    assert!(!den.is_zero(), "division by zero");
    let negative = (num.sign() == Sign::Minus) != (den.sign() == Sign::Minus) && !num.is_zero();
    let (n, d) = (num.abs(), den.abs());
    let mut quotient = &n / &d;
    let remainder = &n % &d;
    if !remainder.is_zero() {
        let twice: BigInt = &remainder * 2;
        let away = match mode {
            Rounding::HalfEven => twice > d || (twice == d && (&quotient % 2u8) == BigInt::one()),
            Rounding::HalfAwayFromZero => twice >= d,
            Rounding::Floor => negative,
        };
        if away {
            quotient += 1;
        }
    }
    if negative { -quotient } else { quotient }
}

/// The exact quotient `num / den` rounded to `scale` decimal places.
///
/// # Panics
/// When `den` is zero.
///
/// ```
/// use allot_query::rounding::{div_round, Rounding};
/// let (one, three) = (1.into(), 3.into());
/// assert_eq!(div_round(&one, &three, 2, Rounding::HalfEven).to_plain_string(), "0.33");
/// ```
pub fn div_round(num: &BigDecimal, den: &BigDecimal, scale: i64, mode: Rounding) -> BigDecimal {
    let (a, sa) = num.as_bigint_and_exponent();
    let (b, sb) = den.as_bigint_and_exponent();
    // num / den × 10^scale = a × 10^(sb − sa + scale) / b
    let exp = sb - sa + scale;
    let (n, d) = if exp >= 0 {
        (a * pow10(exp.unsigned_abs()), b)
    } else {
        (a, b * pow10(exp.unsigned_abs()))
    };
    BigDecimal::new(div_int(&n, &d, mode), scale)
}

/// `value` rounded to `scale` decimal places.
pub fn round_to(value: &BigDecimal, scale: i64, mode: Rounding) -> BigDecimal {
    div_round(value, &BigDecimal::one(), scale, mode)
}

/// A billing quantity: rounded half-to-even to 12 places.
pub fn round_quantity(value: &BigDecimal) -> BigDecimal {
    round_to(value, QUANTITY_SCALE, Rounding::HalfEven)
}

/// `num / den` as a billing quantity, rounded once from the exact quotient.
pub fn div_quantity(num: &BigDecimal, den: &BigDecimal) -> BigDecimal {
    div_round(num, den, QUANTITY_SCALE, Rounding::HalfEven)
}

/// An amount of money: rounded half away from zero to 2 places.
///
/// ```
/// use allot_query::rounding::round_money;
/// let m = |s: &str| round_money(&s.parse().unwrap()).to_plain_string();
/// assert_eq!(m("0.125"), "0.13");
/// assert_eq!(m("-0.125"), "-0.13");
/// assert_eq!(m("0.135"), "0.14");
/// ```
pub fn round_money(value: &BigDecimal) -> BigDecimal {
    round_to(value, MONEY_SCALE, Rounding::HalfAwayFromZero)
}

/// A share rounded half-to-even to 6 places (the value shown in reports).
pub fn round_share(value: &BigDecimal) -> BigDecimal {
    round_to(value, SHARE_SCALE, Rounding::HalfEven)
}

/// A share as report text: 6 decimal places, half-to-even, never exponent notation.
pub fn format_share(value: &BigDecimal) -> String {
    round_share(value).to_plain_string()
}

/// `value` written with exactly `scale` decimal places (rounded half-to-even if it
/// has more), never in exponent notation.
pub fn format_fixed(value: &BigDecimal, scale: i64) -> String {
    round_to(value, scale, Rounding::HalfEven).to_plain_string()
}

/// `value` as an integer count of units of `10^-scale`, when it has at most `scale` places.
pub(crate) fn to_scaled_int(value: &BigDecimal, scale: i64) -> Option<BigInt> {
    let rounded = round_to(value, scale, Rounding::Floor);
    if &rounded != value {
        return None;
    }
    Some(rounded.as_bigint_and_exponent().0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::d;

    #[test]
    fn quantities_round_half_to_even_at_twelve_places() {
        // 12th place 4, tie on 5: 0.0000000000025 → ...02 (2 is even), ...035 → ...04.
        assert_eq!(
            round_quantity(&d("0.0000000000025")).to_plain_string(),
            "0.000000000002"
        );
        assert_eq!(
            round_quantity(&d("0.0000000000035")).to_plain_string(),
            "0.000000000004"
        );
        // Just over the tie goes up.
        assert_eq!(
            round_quantity(&d("0.00000000000250001")).to_plain_string(),
            "0.000000000003"
        );
        assert_eq!(round_quantity(&d("7")).to_plain_string(), "7.000000000000");
    }

    #[test]
    fn division_is_exact_at_ties() {
        // 1 / 8 = 0.125 exactly: to 2 places a tie, half-even → 0.12, away → 0.13.
        assert_eq!(
            div_round(&d("1"), &d("8"), 2, Rounding::HalfEven).to_plain_string(),
            "0.12"
        );
        assert_eq!(
            div_round(&d("1"), &d("8"), 2, Rounding::HalfAwayFromZero).to_plain_string(),
            "0.13"
        );
        // 5 × 10^-13 / 2 ... a tie at place 12 reached through a division:
        // 0.000000000005 / 2 = 0.0000000000025 → 0.000000000002.
        assert_eq!(
            div_quantity(&d("0.000000000005"), &d("2")).to_plain_string(),
            "0.000000000002"
        );
        // 2 / 3 = 0.666… → 0.666666666667; −2 / 3 → −0.666666666667.
        assert_eq!(
            div_quantity(&d("2"), &d("3")).to_plain_string(),
            "0.666666666667"
        );
        assert_eq!(
            div_quantity(&d("-2"), &d("3")).to_plain_string(),
            "-0.666666666667"
        );
        // Floor goes down for negatives: −1/3 → −0.34.
        assert_eq!(
            div_round(&d("-1"), &d("3"), 2, Rounding::Floor).to_plain_string(),
            "-0.34"
        );
        // A divisor with more places than the numerator: 1 / 0.0004 = 2500.
        assert_eq!(
            div_round(&d("1"), &d("0.0004"), 0, Rounding::HalfEven).to_plain_string(),
            "2500"
        );
    }

    #[test]
    fn money_rounds_half_away_from_zero_both_ways() {
        // 0.005 → 0.01 and −0.005 → −0.01; 0.015 → 0.02; 0.0149999 → 0.01.
        assert_eq!(round_money(&d("0.005")).to_plain_string(), "0.01");
        assert_eq!(round_money(&d("-0.005")).to_plain_string(), "-0.01");
        assert_eq!(round_money(&d("0.015")).to_plain_string(), "0.02");
        assert_eq!(round_money(&d("0.0149999")).to_plain_string(), "0.01");
        assert_eq!(round_money(&d("-0.0149999")).to_plain_string(), "-0.01");
        // A zero never prints as "-0.00".
        assert_eq!(round_money(&d("-0.004")).to_plain_string(), "0.00");
    }

    #[test]
    fn shares_and_fixed_text() {
        // 1/3 → 0.333333; 2/3 → 0.666667; a tie 0.0000005 → 0.000000 (even).
        assert_eq!(
            format_share(&div_round(&d("1"), &d("3"), 20, Rounding::HalfEven)),
            "0.333333"
        );
        assert_eq!(
            format_share(&div_round(&d("2"), &d("3"), 20, Rounding::HalfEven)),
            "0.666667"
        );
        assert_eq!(format_share(&d("0.0000005")), "0.000000");
        assert_eq!(format_share(&d("1")), "1.000000");
        assert_eq!(format_fixed(&d("1E-12"), 12), "0.000000000001");
        assert_eq!(to_scaled_int(&d("12.34"), 2), Some(BigInt::from(1234)));
        assert_eq!(to_scaled_int(&d("12.3"), 2), Some(BigInt::from(1230)));
        assert_eq!(to_scaled_int(&d("12.345"), 2), None);
    }
}
