//! Noisy neighbours: tenants whose usage of a metric jumps far above their own
//! baseline while taking a large share of a bucket (docs/reference.md#noisy-neighbours).
//!
//! The input is usage per (tenant, bucket) for one metric over
//! `[from − baseline × bucket, to)`, as the lake aggregates it; the output is one
//! [`NoisyRow`] per tenant with usage in each bucket of `[from, to)`, flagged or not.
//!
//! Decisions (see also `docs/decisions/0019-billing-semantics.md`):
//! - Buckets are `[from + k × bucket, from + (k + 1) × bucket)`; `to − from` must be a
//!   whole number of buckets and input buckets must sit on that grid (an error
//!   otherwise); input outside the window is ignored.
//! - A tenant "used the metric" in a bucket when its usage there is > 0; only
//!   those tenants get rows and count as `active_tenants`.
//! - The flag is decided exactly, in decimals: `share ≥ min_share` is
//!   `u ≥ min_share × total`, and `z ≥ min_z` is decided on squares
//!   (`(n·u − S)² ≥ min_z² · (n·S₂ − S²)` with the sign of `n·u − S`), so no
//!   floating point or square root can tip a row across a threshold. σ is the
//!   population standard deviation; σ = 0 gives `z = +inf` when `u > μ`, else 0.
//! - Shown values: usage, mean and σ with 12 places, share and z with 6 places
//!   (half-to-even), `z = inf` when infinite.

use std::collections::BTreeMap;
use std::fmt;

use allot_schemas::config::NoisyConfig;
use bigdecimal::num_bigint::BigInt;
use bigdecimal::{BigDecimal, Signed, ToPrimitive, Zero};

use crate::error::QueryError;
use crate::period::format_micros;
use crate::rounding::{
    QUANTITY_SCALE, Rounding, SHARE_SCALE, div_round, format_fixed, format_share,
};

/// Decimal places used for intermediate square roots (display only).
const SQRT_SCALE: i64 = 30;

/// Thresholds and window of the detector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisyParams {
    /// Bucket width in microseconds.
    pub bucket_micros: i64,
    /// Number of buckets in the baseline before each bucket.
    pub baseline_buckets: u32,
    /// Minimum share of the bucket's total usage.
    pub min_share: BigDecimal,
    /// Minimum z-score against the baseline.
    pub min_z: BigDecimal,
    /// Minimum number of tenants with usage in the bucket.
    pub min_active_tenants: u32,
}

impl From<&NoisyConfig> for NoisyParams {
    fn from(config: &NoisyConfig) -> Self {
        NoisyParams {
            bucket_micros: i64::try_from(config.bucket.0.as_micros()).unwrap_or(i64::MAX),
            baseline_buckets: config.baseline_buckets,
            min_share: config.min_share.0.clone(),
            min_z: config.min_z.0.clone(),
            min_active_tenants: config.min_active_tenants,
        }
    }
}

/// A tenant's usage of the metric in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUsage {
    /// The tenant.
    pub tenant_id: String,
    /// Start of the bucket, UTC microseconds.
    pub bucket_start: i64,
    /// Usage in the bucket (several entries for one tenant and bucket add up).
    pub usage: BigDecimal,
}

/// A z-score: finite (rounded to 6 places for display) or +∞.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZScore {
    /// A finite value, 6 decimal places.
    Finite(BigDecimal),
    /// σ = 0 and the usage is above the mean.
    PositiveInfinity,
}

impl fmt::Display for ZScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZScore::Finite(z) => f.write_str(&format_fixed(z, SHARE_SCALE)),
            ZScore::PositiveInfinity => f.write_str("inf"),
        }
    }
}

/// The columns of a noisy-neighbour row, in CSV order.
pub const NOISY_COLUMNS: [&str; 9] = [
    "metric",
    "bucket_start",
    "tenant_id",
    "usage",
    "share",
    "baseline_mean",
    "baseline_stddev",
    "z",
    "active_tenants",
];

/// One tenant in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoisyRow {
    /// The metric.
    pub metric: String,
    /// Start of the bucket, UTC microseconds.
    pub bucket_start: i64,
    /// The tenant.
    pub tenant_id: String,
    /// Its usage in the bucket.
    pub usage: BigDecimal,
    /// usage / the bucket's total, 6 places.
    pub share: BigDecimal,
    /// Mean of its usage over the baseline buckets, 12 places.
    pub baseline_mean: BigDecimal,
    /// Population standard deviation over the baseline buckets, 12 places.
    pub baseline_stddev: BigDecimal,
    /// (usage − mean) / stddev.
    pub z: ZScore,
    /// Tenants with usage > 0 in the bucket.
    pub active_tenants: u32,
    /// Whether the share, z and active-tenant thresholds are all met.
    pub flagged: bool,
}

impl NoisyRow {
    /// The row as CSV fields in [`NOISY_COLUMNS`] order.
    pub fn csv_record(&self) -> Vec<String> {
        vec![
            self.metric.clone(),
            format_micros(self.bucket_start),
            self.tenant_id.clone(),
            format_fixed(&self.usage, QUANTITY_SCALE),
            format_share(&self.share),
            format_fixed(&self.baseline_mean, QUANTITY_SCALE),
            format_fixed(&self.baseline_stddev, QUANTITY_SCALE),
            self.z.to_string(),
            self.active_tenants.to_string(),
        ]
    }
}

/// Which rows a report keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// Only the flagged rows (the CLI's default, health's flags).
    Flagged,
    /// Every tenant with usage in every bucket (`--all`).
    All,
}

/// Exact arithmetic the detector runs on: integers scaled by a power of ten
/// when every sum fits in them (the usual case, and some fifty times faster),
/// decimals otherwise. `None` is an overflow, which sends the whole metric to
/// the decimal path; decisions and shown values are the same on both.
trait Exact: Clone + Ord + Sized {
    fn zero_value() -> Self;
    /// `value × 10^scale`, when that is an integer this type holds.
    fn scaled(value: &BigDecimal, scale: i64) -> Option<Self>;
    fn add(&self, other: &Self) -> Option<Self>;
    fn sub(&self, other: &Self) -> Option<Self>;
    fn mul(&self, other: &Self) -> Option<Self>;
    /// `self / 10^scale` as a decimal.
    fn unscaled(&self, scale: i64) -> BigDecimal;
}

impl Exact for i128 {
    fn zero_value() -> Self {
        0
    }
    fn scaled(value: &BigDecimal, scale: i64) -> Option<Self> {
        let (digits, exponent) = value.with_scale(scale).into_bigint_and_exponent();
        debug_assert_eq!(exponent, scale);
        // `with_scale` truncates; a value with more places is not representable.
        let back = BigDecimal::new(digits.clone(), scale);
        if &back != value {
            return None;
        }
        digits.to_i128()
    }
    fn add(&self, other: &Self) -> Option<Self> {
        self.checked_add(*other)
    }
    fn sub(&self, other: &Self) -> Option<Self> {
        self.checked_sub(*other)
    }
    fn mul(&self, other: &Self) -> Option<Self> {
        self.checked_mul(*other)
    }
    fn unscaled(&self, scale: i64) -> BigDecimal {
        BigDecimal::new(BigInt::from(*self), scale)
    }
}

impl Exact for BigDecimal {
    fn zero_value() -> Self {
        <BigDecimal as Zero>::zero()
    }
    fn scaled(value: &BigDecimal, scale: i64) -> Option<Self> {
        Some(value * BigDecimal::new(BigInt::from(1), -scale))
    }
    fn add(&self, other: &Self) -> Option<Self> {
        Some(self + other)
    }
    fn sub(&self, other: &Self) -> Option<Self> {
        Some(self - other)
    }
    fn mul(&self, other: &Self) -> Option<Self> {
        Some(self * other)
    }
    fn unscaled(&self, scale: i64) -> BigDecimal {
        self * BigDecimal::new(BigInt::from(1), scale)
    }
}

/// A threshold `numerator / denominator` with a positive denominator, so that
/// `x ≥ t·y` is decided as `x·denominator ≥ numerator·y`.
struct Fraction<T> {
    numerator: T,
    denominator: T,
}

impl<T: Exact> Fraction<T> {
    fn of(value: &BigDecimal) -> Option<Fraction<T>> {
        let (digits, exponent) = value.as_bigint_and_exponent();
        let (numerator, denominator) = if exponent >= 0 {
            (
                BigDecimal::from(digits),
                BigDecimal::new(BigInt::from(1), -exponent),
            )
        } else {
            (BigDecimal::new(digits, exponent), BigDecimal::from(1))
        };
        Some(Fraction {
            numerator: T::scaled(&numerator, 0)?,
            denominator: T::scaled(&denominator, 0)?,
        })
    }
}

/// Whether `z ≥ m` where `z = d / √v` (v ≥ 0; v = 0 means σ = 0) and
/// `m = c / e`, decided exactly on squares: `d²·e² ≥ c²·v`.
fn z_at_least<T: Exact>(d: &T, v: &T, m: &Fraction<T>) -> Option<bool> {
    let zero = T::zero_value();
    let m_positive = m.numerator > zero;
    let m_negative = m.numerator < zero;
    if v == &zero {
        // z = +inf when d > 0, else 0.
        return Some(d > &zero || !m_positive);
    }
    let left = d.mul(d)?.mul(&m.denominator.mul(&m.denominator)?)?;
    let right = m.numerator.mul(&m.numerator)?.mul(v)?;
    let d_square_vs = left.cmp(&right);
    Some(if m_negative {
        d >= &zero || d_square_vs.is_le()
    } else {
        d >= &zero && d_square_vs.is_ge()
    })
}

/// Square root of a non-negative decimal to [`SQRT_SCALE`] places (display only).
fn sqrt(value: &BigDecimal) -> BigDecimal {
    value
        .sqrt()
        .unwrap_or_else(BigDecimal::zero)
        .with_scale_round(SQRT_SCALE, bigdecimal::RoundingMode::HalfEven)
}

/// The bucket grid of one report: slot `i` is bucket `first + i × width`; the
/// first `baseline` slots are only a baseline.
struct Grid {
    first: i64,
    width: i64,
    baseline: usize,
    slots: usize,
}

/// Rows for the tenants with usage in the buckets of `[from, to)`: all of
/// them, or only the flagged ones.
pub fn noisy_neighbours(
    metric: &str,
    from: i64,
    to: i64,
    params: &NoisyParams,
    usage: &[BucketUsage],
    keep: Keep,
) -> Result<Vec<NoisyRow>, QueryError> {
    let width = params.bucket_micros;
    if width <= 0 || params.baseline_buckets == 0 {
        return Err(QueryError::InvalidInput(
            "the bucket and the baseline must be greater than 0".to_string(),
        ));
    }
    if to <= from {
        return Ok(Vec::new());
    }
    if (to - from) % width != 0 {
        return Err(QueryError::InvalidInput(format!(
            "the range {} – {} is not a whole number of buckets",
            format_micros(from),
            format_micros(to)
        )));
    }
    let baseline = i64::from(params.baseline_buckets);
    let buckets = (to - from) / width;
    let grid = Grid {
        first: from - baseline * width,
        width,
        baseline: usize::try_from(baseline).expect("baseline fits"),
        slots: usize::try_from(baseline + buckets).expect("bucket count fits"),
    };
    // Each entry's slot, checked against the grid.
    let mut placed: Vec<(&str, usize, &BigDecimal)> = Vec::with_capacity(usage.len());
    for entry in usage {
        let offset = entry.bucket_start - grid.first;
        if offset.rem_euclid(width) != 0 {
            return Err(QueryError::InvalidInput(format!(
                "bucket {} of tenant {} is not on the {} µs grid starting at {}",
                format_micros(entry.bucket_start),
                entry.tenant_id,
                width,
                format_micros(from)
            )));
        }
        if entry.bucket_start < grid.first || entry.bucket_start >= to {
            continue;
        }
        let slot = usize::try_from(offset / width).expect("inside the window");
        placed.push((entry.tenant_id.as_str(), slot, &entry.usage));
    }
    // The fewest decimal places that hold every value exactly.
    let scale: Option<i64> = placed
        .iter()
        .map(|(_, _, value)| fractional_places(value))
        .try_fold(0, |most, places| Some(most.max(places?)));
    let integers =
        scale.and_then(|scale| detect::<i128>(metric, &grid, params, &placed, scale, keep));
    let mut rows = match integers {
        Some(rows) => rows,
        None => detect::<BigDecimal>(metric, &grid, params, &placed, 0, keep)
            .expect("decimal arithmetic does not overflow"),
    };
    rows.sort_by(|a, b| (a.bucket_start, &a.tenant_id).cmp(&(b.bucket_start, &b.tenant_id)));
    Ok(rows)
}

/// The decimal places `value` needs (trailing zeros do not count); `None`
/// when its digits do not fit in 128 bits (the metric then runs on decimals).
fn fractional_places(value: &BigDecimal) -> Option<i64> {
    let (digits, scale) = value.as_bigint_and_exponent();
    let mut digits = digits.to_i128()?;
    let mut scale = scale;
    while scale > 0 && digits % 10 == 0 {
        digits /= 10;
        scale -= 1;
    }
    Some(scale.max(0))
}

/// The detector on `T`, values scaled by `10^scale`; `None` on an overflow.
fn detect<T: Exact>(
    metric: &str,
    grid: &Grid,
    params: &NoisyParams,
    placed: &[(&str, usize, &BigDecimal)],
    scale: i64,
    keep: Keep,
) -> Option<Vec<NoisyRow>> {
    let zero = T::zero_value();
    // Dense usage per tenant over the grid.
    let mut dense: BTreeMap<&str, Vec<T>> = BTreeMap::new();
    for &(tenant, slot, value) in placed {
        let values = dense
            .entry(tenant)
            .or_insert_with(|| vec![zero.clone(); grid.slots]);
        values[slot] = values[slot].add(&T::scaled(value, scale)?)?;
    }
    let mut totals = vec![zero.clone(); grid.slots];
    let mut active = vec![0u32; grid.slots];
    for values in dense.values() {
        for (slot, value) in values.iter().enumerate() {
            if value > &zero {
                totals[slot] = totals[slot].add(value)?;
                active[slot] += 1;
            }
        }
    }
    let n = T::scaled(&BigDecimal::from(grid.baseline as u64), 0)?;
    let min_share = Fraction::<T>::of(&params.min_share)?;
    let min_z = Fraction::<T>::of(&params.min_z)?;

    let mut rows: Vec<NoisyRow> = Vec::new();
    for (tenant, values) in &dense {
        // Prefix sums of usage and of its square: baseline sums in O(1) per bucket.
        let mut sums = vec![zero.clone(); grid.slots + 1];
        let mut squares = vec![zero.clone(); grid.slots + 1];
        for (i, value) in values.iter().enumerate() {
            sums[i + 1] = sums[i].add(value)?;
            squares[i + 1] = squares[i].add(&value.mul(value)?)?;
        }
        for slot in grid.baseline..grid.slots {
            let u = &values[slot];
            if u <= &zero {
                continue;
            }
            let total = &totals[slot];
            let s = sums[slot].sub(&sums[slot - grid.baseline])?;
            let s2 = squares[slot].sub(&squares[slot - grid.baseline])?;
            // d = n·u − S = n(u − μ); v = n·S₂ − S² = n²σ².
            let d = n.mul(u)?.sub(&s)?;
            let v = n.mul(&s2)?.sub(&s.mul(&s)?)?;
            let flagged = u.mul(&min_share.denominator)? >= min_share.numerator.mul(total)?
                && z_at_least(&d, &v, &min_z)?
                && active[slot] >= params.min_active_tenants;
            if keep == Keep::Flagged && !flagged {
                continue;
            }
            let bucket_start = grid.first + i64::try_from(slot).expect("slot fits") * grid.width;
            rows.push(shown_row(
                metric,
                tenant,
                bucket_start,
                [
                    u.unscaled(scale),
                    total.unscaled(scale),
                    s.unscaled(scale),
                    s2.unscaled(2 * scale),
                ],
                grid.baseline,
                active[slot],
                flagged,
            ));
        }
    }
    Some(rows)
}

/// The shown values of a row, from its exact usage `u`, the bucket's total,
/// and the baseline's sum `s` and sum of squares `s2` over `baseline` buckets.
fn shown_row(
    metric: &str,
    tenant: &str,
    bucket_start: i64,
    [u, total, s, s2]: [BigDecimal; 4],
    baseline: usize,
    active_tenants: u32,
    flagged: bool,
) -> NoisyRow {
    let n = BigDecimal::from(baseline as u64);
    let d = &n * &u - &s;
    let v = &n * &s2 - &s * &s;
    let root = sqrt(&v);
    let z = if v.is_zero() {
        if d.is_positive() {
            ZScore::PositiveInfinity
        } else {
            ZScore::Finite(BigDecimal::zero())
        }
    } else {
        ZScore::Finite(div_round(&d, &root, SHARE_SCALE, Rounding::HalfEven))
    };
    NoisyRow {
        metric: metric.to_string(),
        bucket_start,
        tenant_id: tenant.to_string(),
        share: div_round(&u, &total, SHARE_SCALE, Rounding::HalfEven),
        usage: u,
        baseline_mean: div_round(&s, &n, QUANTITY_SCALE, Rounding::HalfEven),
        baseline_stddev: div_round(&root, &n, QUANTITY_SCALE, Rounding::HalfEven),
        z,
        active_tenants,
        flagged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{d, ts};
    use allot_schemas::time::MICROS_PER_HOUR;

    /// Hourly buckets, a 4-bucket baseline, the default thresholds.
    fn params() -> NoisyParams {
        NoisyParams {
            bucket_micros: MICROS_PER_HOUR,
            baseline_buckets: 4,
            ..NoisyParams::from(&NoisyConfig::default())
        }
    }

    /// `series[i]` is the usage in bucket `start + (i − 4) h`, i.e. 4 baseline buckets first.
    fn usage(start: i64, series: &[(&str, &[&str])]) -> Vec<BucketUsage> {
        let mut out = Vec::new();
        for (tenant, values) in series {
            for (i, value) in values.iter().enumerate() {
                if !value.is_empty() {
                    out.push(BucketUsage {
                        tenant_id: tenant.to_string(),
                        bucket_start: start + (i as i64 - 4) * MICROS_PER_HOUR,
                        usage: d(value),
                    });
                }
            }
        }
        out
    }

    fn render(rows: &[NoisyRow]) -> Vec<String> {
        rows.iter()
            .map(|r| format!("{},{}", r.csv_record().join(","), r.flagged))
            .collect()
    }

    #[test]
    fn a_noisy_tenant_among_steady_ones() {
        // Bucket 04:00; baseline 00:00–03:00 (n = 4).
        //   a: 10 10 10 10 → μ 10, σ 0; u 10 = μ → z 0.
        //   b:  8 12  8 12 → μ 10, σ² = 4, σ 2; u 12 → z = (12 − 10)/2 = 1.
        //   c:  1  3  1  3 → μ 2,  σ² = 1, σ 1; u 98 → z = 96.
        // Total 10 + 12 + 98 = 120: shares 1/12 = 0.083333, 0.1, 98/120 = 0.8166… → 0.816667.
        // Only c has share ≥ 0.30, z ≥ 3 and 3 ≥ 2 active tenants.
        let start = ts("2026-01-10T04:00:00Z");
        let input = usage(
            start,
            &[
                ("c", &["1", "3", "1", "3", "98"]),
                ("a", &["10", "10", "10", "10", "10"]),
                ("b", &["8", "12", "8", "12", "12"]),
            ],
        );
        let rows = noisy_neighbours(
            "api_calls",
            start,
            start + MICROS_PER_HOUR,
            &params(),
            &input,
            Keep::All,
        )
        .unwrap();
        let at = "api_calls,2026-01-10T04:00:00Z";
        assert_eq!(
            render(&rows),
            [
                format!(
                    "{at},a,10.000000000000,0.083333,10.000000000000,0.000000000000,0.000000,3,false"
                ),
                format!(
                    "{at},b,12.000000000000,0.100000,10.000000000000,2.000000000000,1.000000,3,false"
                ),
                format!(
                    "{at},c,98.000000000000,0.816667,2.000000000000,1.000000000000,96.000000,3,true"
                ),
            ]
        );
    }

    #[test]
    fn z_with_a_zero_stddev_and_empty_baselines() {
        // Bucket 04:00: p steady 5 (σ 0, u = μ → z 0); q has no baseline (empty buckets
        // count as 0: μ 0, σ 0) and u 5 > μ → z = +inf; share 5/10 = 0.5 → q flagged.
        // Bucket 05:00: only q (5). Its baseline is 01:00–04:00 = 0, 0, 0, 5:
        //   μ = 1.25; σ² = (0+0+0+25)/4 − 1.25² = 6.25 − 1.5625 = 4.6875,
        //   σ = √4.6875 = 2.165063509461097 → 2.165063509461;
        //   z = (5 − 1.25)/σ = 3.75/2.1650635… = √3 = 1.7320508… → 1.732051.
        //   One active tenant < 2 → not flagged despite share 1.
        let start = ts("2026-01-10T04:00:00Z");
        let input = usage(
            start,
            &[
                ("p", &["5", "5", "5", "5", "5", ""]),
                ("q", &["", "", "", "", "5", "5"]),
            ],
        );
        let rows = noisy_neighbours(
            "api_calls",
            start,
            start + 2 * MICROS_PER_HOUR,
            &params(),
            &input,
            Keep::All,
        )
        .unwrap();
        assert_eq!(
            render(&rows),
            [
                "api_calls,2026-01-10T04:00:00Z,p,5.000000000000,0.500000,5.000000000000,0.000000000000,0.000000,2,false",
                "api_calls,2026-01-10T04:00:00Z,q,5.000000000000,0.500000,0.000000000000,0.000000000000,inf,2,true",
                "api_calls,2026-01-10T05:00:00Z,q,5.000000000000,1.000000,1.250000000000,2.165063509461,1.732051,1,false",
            ]
        );
    }

    #[test]
    fn thresholds_are_compared_exactly() {
        // b: baseline 8 12 8 12 (μ 10, σ 2); u = 16 → z = 3 exactly, which meets z ≥ 3.0.
        // a: u = 16 too, so each share is exactly 0.5; a's σ 0 with u > μ → +inf.
        let start = ts("2026-01-10T04:00:00Z");
        let input = usage(
            start,
            &[
                ("a", &["1", "1", "1", "1", "16"]),
                ("b", &["8", "12", "8", "12", "16"]),
            ],
        );
        let mut p = params();
        p.min_share = d("0.5");
        let rows =
            noisy_neighbours("m", start, start + MICROS_PER_HOUR, &p, &input, Keep::All).unwrap();
        assert_eq!(rows[1].z, ZScore::Finite(d("3.000000")));
        assert!(rows.iter().all(|r| r.flagged));
        // z just below: u = 15.99 → d = 4·15.99 − 40 = 23.96 < 3 × 8.
        assert!(!z_ok("23.96", "64", "3"));
        assert!(z_ok("24", "64", "3"));
        assert!(!z_ok("24", "64", "3.01"));
        // Negative thresholds: z = −1 ≥ −2, z = −3 < −2; σ = 0 with u ≤ μ gives z = 0.
        assert!(z_ok("-8", "64", "-2"));
        assert!(!z_ok("-24", "64", "-2"));
        assert!(z_ok("0", "0", "0"));
        assert!(!z_ok("0", "0", "0.1"));
    }

    /// `z ≥ m` for `z = d / √v`, decided on decimals and on integers scaled
    /// by 10^2 (d) and 10^4 (v), which must agree.
    fn z_ok(dv: &str, v: &str, m: &str) -> bool {
        let exact = z_at_least(&d(dv), &d(v), &Fraction::of(&d(m)).unwrap()).unwrap();
        let scaled = |text: &str, places: i64| i128::scaled(&d(text), places).unwrap();
        let integers =
            z_at_least(&scaled(dv, 2), &scaled(v, 4), &Fraction::of(&d(m)).unwrap()).unwrap();
        assert_eq!(exact, integers, "d {dv}, v {v}, m {m}");
        exact
    }

    #[test]
    fn integers_and_decimals_give_the_same_rows() {
        // Random usage with up to 9 places over 3 tenants, 4 + 6 hourly buckets:
        // the scaled-integer path and the decimal path give the same rows, and
        // only the flagged ones when asked.
        let start = ts("2026-01-10T04:00:00Z");
        let mut seed = 7u64;
        let mut next = move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            seed >> 33
        };
        let mut p = params();
        p.min_z = d("1.5");
        p.min_share = d("0.4");
        let mut flagged_seen = 0;
        for _ in 0..50 {
            let mut input = Vec::new();
            for tenant in ["a", "b", "c"] {
                for slot in 0..10 {
                    if next() % 4 == 0 {
                        continue;
                    }
                    let places = next() % 10;
                    let digits = next() % 1_000_000;
                    input.push(BucketUsage {
                        tenant_id: tenant.to_string(),
                        bucket_start: start + (slot - 4) * MICROS_PER_HOUR,
                        usage: BigDecimal::new(BigInt::from(digits), places as i64),
                    });
                }
            }
            let to = start + 6 * MICROS_PER_HOUR;
            let all = noisy_neighbours("m", start, to, &p, &input, Keep::All).unwrap();
            let grid = Grid {
                first: start - 4 * MICROS_PER_HOUR,
                width: MICROS_PER_HOUR,
                baseline: 4,
                slots: 10,
            };
            let placed: Vec<(&str, usize, &BigDecimal)> = input
                .iter()
                .map(|u| {
                    let slot = ((u.bucket_start - grid.first) / MICROS_PER_HOUR) as usize;
                    (u.tenant_id.as_str(), slot, &u.usage)
                })
                .collect();
            let mut decimals = detect::<BigDecimal>("m", &grid, &p, &placed, 0, Keep::All).unwrap();
            decimals.sort_by(|a, b| {
                (a.bucket_start, &a.tenant_id).cmp(&(b.bucket_start, &b.tenant_id))
            });
            assert_eq!(all, decimals);
            let flagged = noisy_neighbours("m", start, to, &p, &input, Keep::Flagged).unwrap();
            let expected: Vec<NoisyRow> = all.into_iter().filter(|r| r.flagged).collect();
            assert_eq!(flagged, expected);
            flagged_seen += flagged.len();
        }
        assert!(flagged_seen > 0, "no case flagged anything");
    }

    #[test]
    fn sums_too_large_for_integers_are_decided_on_decimals() {
        // Squares of 10^20 overflow 128 bits: the metric falls back to decimals.
        let start = ts("2026-01-10T04:00:00Z");
        let big = "100000000000000000000";
        let input = usage(
            start,
            &[
                ("a", &["1", "1", "1", "1", big]),
                ("b", &["1", "1", "1", "1", "1"]),
            ],
        );
        let rows = noisy_neighbours(
            "m",
            start,
            start + MICROS_PER_HOUR,
            &params(),
            &input,
            Keep::Flagged,
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tenant_id, "a");
        assert_eq!(rows[0].usage, d(big));
    }

    #[test]
    fn buckets_off_the_grid_are_an_error() {
        let start = ts("2026-01-10T04:00:00Z");
        let input = vec![BucketUsage {
            tenant_id: "a".to_string(),
            bucket_start: start + 1,
            usage: d("1"),
        }];
        assert!(
            noisy_neighbours(
                "m",
                start,
                start + MICROS_PER_HOUR,
                &params(),
                &input,
                Keep::All
            )
            .is_err()
        );
        assert!(
            noisy_neighbours(
                "m",
                start,
                start + 90 * 60_000_000,
                &params(),
                &[],
                Keep::All
            )
            .is_err()
        );
        assert_eq!(
            noisy_neighbours("m", start, start, &params(), &input, Keep::All).unwrap(),
            []
        );
    }
}
