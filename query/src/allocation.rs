//! Shared-cost allocation (chargeback of real spend,
//! docs/reference.md#shared-cost-allocation).
//!
//! A costs CSV names pools of real spend and the metric that drives each; every
//! pool is split between tenants in proportion to their billing quantity of the
//! driver metric in the period, to the cent, so the parts add up to the pool
//! exactly.
//!
//! Decisions (see also `docs/decisions/0019-billing-semantics.md`):
//! - **Largest remainder, exactly.** Each tenant's exact share of the pool is
//!   floored to the cent; the cents left over go one each to the largest
//!   remainders, ties by tenant id ascending. All of it is integer arithmetic on
//!   cents and 12-place quantities, so there is no rounding to disagree about.
//! - **Drivers** are billing quantities rounded to 12 places
//!   (docs/reference.md#periods-and-precision); region/service filters are applied by
//!   whoever computes them. Tenants whose driver quantity is 0 get no row. A pool whose
//!   driver has no usage at all goes whole to [`UNALLOCATED_TENANT`] with driver quantity 0
//!   and share 1.
//! - **`share`** is quantity / Σ quantities shown with 6 places, half-to-even; it is
//!   for reading only, amounts never go through it.
//! - **The CSV** may start with a header row (its first field is `period`): it then
//!   names the five required columns in order followed by `region` and/or
//!   `service` in any order. Without a header the columns are positional,
//!   `period,pool,amount,currency,driver[,region][,service]`. Fields may be quoted
//!   (`"a,b"`, `""` for a quote); blank lines and a UTF-8 byte-order mark are
//!   ignored; an empty region/service means no filter. Rows are numbered by line
//!   in the file, the header being row 1. Amounts have at most 2 decimal places
//!   (a pool of fractions of a cent cannot be split to the cent exactly), are not
//!   negative and are in the configured currency; `(period, pool)` is unique.

use std::collections::BTreeMap;

use allot_schemas::config::MetricCatalog;
use allot_schemas::decimal::parse_plain_decimal;
pub use allot_schemas::tenant::UNALLOCATED_TENANT;
use bigdecimal::num_bigint::BigInt;
use bigdecimal::{BigDecimal, One, ToPrimitive, Zero};

use crate::error::QueryError;
use crate::period::Period;
use crate::rounding::{
    MONEY_SCALE, QUANTITY_SCALE, Rounding, div_round, format_fixed, format_share, round_quantity,
    round_share, to_scaled_int,
};

/// The columns of a costs CSV, in positional order (`region`, `service` optional).
pub const COSTS_COLUMNS: [&str; 7] = [
    "period", "pool", "amount", "currency", "driver", "region", "service",
];

/// One pool of shared cost, a row of the costs CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostPool {
    /// The row of the costs file it came from (1-based line number).
    pub row: usize,
    /// The billing period of the spend.
    pub period: Period,
    /// The pool's name.
    pub pool: String,
    /// The amount to split, ≥ 0 with at most 2 decimal places.
    pub amount: BigDecimal,
    /// Its currency (the configured one).
    pub currency: String,
    /// The metric whose usage drives the split.
    pub driver: String,
    /// Only usage in this region counts, when given.
    pub region: Option<String>,
    /// Only usage of this service counts, when given.
    pub service: Option<String>,
}

/// One tenant's part of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRow {
    /// The billing period.
    pub period: Period,
    /// The pool.
    pub pool: String,
    /// The tenant charged (or [`UNALLOCATED_TENANT`]).
    pub tenant_id: String,
    /// The tenant's billing quantity of the driver metric (12 places).
    pub driver_quantity: BigDecimal,
    /// driver_quantity / Σ driver quantities, 6 places half-to-even.
    pub share: BigDecimal,
    /// The tenant's part of the pool, to the cent.
    pub amount: BigDecimal,
}

impl AllocationRow {
    /// The row as CSV fields in [`allot_schemas::table_schema::ALLOCATION_CSV_COLUMNS`] order.
    pub fn csv_record(&self) -> Vec<String> {
        vec![
            self.period.to_string(),
            self.pool.clone(),
            self.tenant_id.clone(),
            format_fixed(&self.driver_quantity, QUANTITY_SCALE),
            format_share(&self.share),
            format_fixed(&self.amount, MONEY_SCALE),
        ]
    }
}

/// Splits one CSV line into fields (RFC 4180 quoting within a line).
fn split_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        // Skip leading spaces of the field.
        while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".to_string()),
                }
            }
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected {c:?} after a quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field.trim().to_string());
                        break;
                    }
                    Some('"') => return Err("a quote inside an unquoted field".to_string()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

/// Parses a costs CSV, checking every row against the catalog and the configured
/// currency. The error names the row and the problem.
pub fn parse_costs_csv(
    text: &str,
    catalog: &MetricCatalog,
    currency: &str,
) -> Result<Vec<CostPool>, QueryError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Column positions of region and service, and the field count rows must have.
    let mut layout: Option<(Option<usize>, Option<usize>, usize)> = None;
    let mut pools: Vec<CostPool> = Vec::new();
    let mut seen: BTreeMap<(Period, String), usize> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let row = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fail = |problem: String| QueryError::Costs { row, problem };
        let fields = split_csv_line(line).map_err(|e| fail(format!("malformed row: {e}")))?;

        if layout.is_none() && fields[0].eq_ignore_ascii_case("period") {
            let names: Vec<String> = fields.iter().map(|f| f.to_ascii_lowercase()).collect();
            let extra = &names[names.len().min(5)..];
            let valid = names.len() >= 5
                && names.len() <= 7
                && names[..5] == COSTS_COLUMNS[..5]
                && extra.iter().all(|n| n == "region" || n == "service")
                && !(extra.len() == 2 && extra[0] == extra[1]);
            if !valid {
                return Err(fail(format!(
                    "malformed header {line:?}: expected period,pool,amount,currency,driver[,region][,service]"
                )));
            }
            let position = |name: &str| names.iter().position(|n| n == name);
            layout = Some((position("region"), position("service"), names.len()));
            continue;
        }
        let (region_at, service_at, width) = *layout.get_or_insert((Some(5), Some(6), 0));
        let count_ok = if width == 0 {
            (5..=7).contains(&fields.len())
        } else {
            fields.len() == width
        };
        if !count_ok {
            let expected = if width == 0 {
                "5 to 7".to_string()
            } else {
                width.to_string()
            };
            return Err(fail(format!(
                "malformed row: expected {expected} fields (period,pool,amount,currency,driver[,region][,service]), found {}",
                fields.len()
            )));
        }

        let period = Period::parse(&fields[0])
            .map_err(|_| fail(format!("period {:?} is not YYYY-MM", fields[0])))?;
        let pool = fields[1].clone();
        if pool.is_empty() {
            return Err(fail("malformed row: the pool name is empty".to_string()));
        }
        let amount = parse_plain_decimal(&fields[2]).ok_or_else(|| {
            fail(format!(
                "malformed row: amount {:?} is not a decimal number",
                fields[2]
            ))
        })?;
        if amount < BigDecimal::zero() {
            return Err(fail(format!("negative amount {}", fields[2])));
        }
        if to_scaled_int(&amount, MONEY_SCALE).is_none() {
            return Err(fail(format!(
                "amount {} has more than 2 decimal places",
                fields[2]
            )));
        }
        if fields[3] != currency {
            return Err(fail(format!(
                "currency {:?} does not match the configured currency {currency}",
                fields[3]
            )));
        }
        let driver = fields[4].clone();
        if !catalog.contains(&driver) {
            return Err(fail(format!(
                "unknown driver metric {driver:?} (not in the metric catalog)"
            )));
        }
        let optional = |at: Option<usize>| {
            at.and_then(|i| fields.get(i))
                .filter(|f| !f.is_empty())
                .cloned()
        };
        if let Some(first) = seen.insert((period, pool.clone()), row) {
            return Err(fail(format!(
                "duplicate pool {pool:?} for period {period} (first on row {first})"
            )));
        }
        pools.push(CostPool {
            row,
            period,
            pool,
            amount,
            currency: fields[3].clone(),
            driver,
            region: optional(region_at),
            service: optional(service_at),
        });
    }
    Ok(pools)
}

/// Splits `pool` between tenants by their driver quantities (billing units).
///
/// Rows come in tenant-id order; their amounts are ≥ 0 and add up to the pool's
/// amount exactly. Fails when the pool's amount is negative or has fractions of
/// a cent (which [`parse_costs_csv`] never lets through).
pub fn allocate(
    pool: &CostPool,
    driver_quantities: &BTreeMap<String, BigDecimal>,
) -> Result<Vec<AllocationRow>, QueryError> {
    let cents = to_scaled_int(&pool.amount, MONEY_SCALE)
        .filter(|c| *c >= BigInt::zero())
        .ok_or_else(|| {
            QueryError::InvalidInput(format!(
                "pool {} amount {} must be ≥ 0 with at most 2 decimal places",
                pool.pool, pool.amount
            ))
        })?;
    let row =
        |tenant: &str, quantity: BigDecimal, share: BigDecimal, cents: BigInt| AllocationRow {
            period: pool.period,
            pool: pool.pool.clone(),
            tenant_id: tenant.to_string(),
            driver_quantity: quantity,
            share,
            amount: BigDecimal::new(cents, MONEY_SCALE),
        };

    // (tenant, 12-place quantity, the same as an integer of 10^-12 units)
    let drivers: Vec<(&String, BigDecimal, BigInt)> = driver_quantities
        .iter()
        .map(|(tenant, q)| {
            let q = round_quantity(q);
            let units = to_scaled_int(&q, QUANTITY_SCALE).expect("rounded to 12 places");
            (tenant, q, units)
        })
        .filter(|(_, _, units)| *units > BigInt::zero())
        .collect();
    let total: BigInt = drivers.iter().map(|(_, _, units)| units).sum();
    if drivers.is_empty() {
        return Ok(vec![row(
            UNALLOCATED_TENANT,
            BigDecimal::zero().with_scale(QUANTITY_SCALE),
            BigDecimal::one(),
            cents,
        )]);
    }

    // Exact share in cents = cents × units / total: floor it, keep the remainder.
    let mut parts: Vec<(BigInt, BigInt)> = drivers
        .iter()
        .map(|(_, _, units)| {
            let product = &cents * units;
            (&product / &total, &product % &total)
        })
        .collect();
    let floored: BigInt = parts.iter().map(|(floor, _)| floor).sum();
    let leftover = (&cents - floored)
        .to_usize()
        .expect("fewer leftover cents than tenants");
    let mut order: Vec<usize> = (0..parts.len()).collect();
    // Largest remainder first; `drivers` is in tenant-id order and the sort is stable.
    order.sort_by(|&a, &b| parts[b].1.cmp(&parts[a].1));
    for &i in order.iter().take(leftover) {
        parts[i].0 += 1;
    }

    let total_quantity = BigDecimal::new(total, QUANTITY_SCALE);
    Ok(drivers
        .into_iter()
        .zip(parts)
        .map(|((tenant, q, _), (tenant_cents, _))| {
            let share = round_share(&div_round(
                &q,
                &total_quantity,
                QUANTITY_SCALE,
                Rounding::HalfEven,
            ));
            row(tenant, q, share, tenant_cents)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::test_support::d;

    fn pool(amount: &str) -> CostPool {
        CostPool {
            row: 2,
            period: Period::parse("2026-01").unwrap(),
            pool: "k8s".to_string(),
            amount: d(amount),
            currency: "USD".to_string(),
            driver: "compute_seconds".to_string(),
            region: None,
            service: None,
        }
    }

    fn drivers(pairs: &[(&str, &str)]) -> BTreeMap<String, BigDecimal> {
        pairs.iter().map(|(t, q)| (t.to_string(), d(q))).collect()
    }

    fn render(rows: &[AllocationRow]) -> Vec<String> {
        rows.iter().map(|r| r.csv_record().join(",")).collect()
    }

    #[test]
    fn three_equal_tenants_share_a_cent_by_tenant_id() {
        // 100.00 = 10000 cents; each exact share 10000/3 = 3333.33… cents → floor 3333,
        // remainder 1/3 each; 10000 − 3 × 3333 = 1 cent left → the tie goes to the
        // lowest id, a. Shares 1/3 → 0.333333.
        let rows = allocate(
            &pool("100.00"),
            &drivers(&[("c", "5"), ("a", "5"), ("b", "5")]),
        )
        .unwrap();
        assert_eq!(
            render(&rows),
            [
                "2026-01,k8s,a,5.000000000000,0.333333,33.34",
                "2026-01,k8s,b,5.000000000000,0.333333,33.33",
                "2026-01,k8s,c,5.000000000000,0.333333,33.33",
            ]
        );
    }

    #[test]
    fn the_leftover_goes_to_the_largest_remainder() {
        // 1.00 = 100 cents over quantities 1, 2, 4 (Σ 7):
        //   x: 100/7 = 14.285… → 14, remainder 2/7
        //   y: 200/7 = 28.571… → 28, remainder 4/7  ← largest
        //   z: 400/7 = 57.142… → 57, remainder 1/7
        // 14 + 28 + 57 = 99, one cent left → y. Shares 1/7 = 0.142857…, 2/7 = 0.285714…,
        // 4/7 = 0.5714285… → 0.571429. A tenant with 0 usage gets no row.
        let rows = allocate(
            &pool("1.00"),
            &drivers(&[("x", "1"), ("y", "2"), ("z", "4"), ("idle", "0")]),
        )
        .unwrap();
        assert_eq!(
            render(&rows),
            [
                "2026-01,k8s,x,1.000000000000,0.142857,0.14",
                "2026-01,k8s,y,2.000000000000,0.285714,0.29",
                "2026-01,k8s,z,4.000000000000,0.571429,0.57",
            ]
        );
    }

    #[test]
    fn a_pool_with_no_usage_goes_to_unallocated() {
        for quantities in [drivers(&[]), drivers(&[("a", "0")])] {
            let rows = allocate(&pool("250.50"), &quantities).unwrap();
            assert_eq!(
                render(&rows),
                ["2026-01,k8s,__unallocated__,0.000000000000,1.000000,250.50"]
            );
        }
        assert!(allocate(&pool("-1.00"), &drivers(&[("a", "1")])).is_err());
        assert!(allocate(&pool("1.001"), &drivers(&[("a", "1")])).is_err());
    }

    const GOOD: &str = "\u{feff}period,pool,amount,currency,driver,region,service\n\
        2026-01,k8s-cluster,12000.00,USD,compute_seconds,eu-west-1,\n\
        \n\
        2026-01,\"cdn, global\",3000,USD,egress_bytes,,web\r\n";

    #[test]
    fn parses_a_costs_file() {
        let pools = parse_costs_csv(GOOD, &MetricCatalog::default(), "USD").unwrap();
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].row, 2);
        assert_eq!(pools[0].region.as_deref(), Some("eu-west-1"));
        assert_eq!(pools[0].service, None);
        assert_eq!(pools[1].row, 4);
        assert_eq!(pools[1].pool, "cdn, global");
        assert_eq!(pools[1].amount, d("3000"));
        assert_eq!(pools[1].region, None);
        assert_eq!(pools[1].service.as_deref(), Some("web"));
        // Header with service only; and no header at all.
        let pools = parse_costs_csv(
            "period,pool,amount,currency,driver,service\n2026-01,p,1,USD,egress_bytes,api\n",
            &MetricCatalog::default(),
            "USD",
        )
        .unwrap();
        assert_eq!(
            (pools[0].region.as_deref(), pools[0].service.as_deref()),
            (None, Some("api"))
        );
        let pools = parse_costs_csv(
            "2026-02,p,1.5,USD,storage_bytes\n",
            &MetricCatalog::default(),
            "USD",
        )
        .unwrap();
        assert_eq!(pools[0].row, 1);
    }

    #[test]
    fn costs_errors_name_the_row_and_the_problem() {
        let header = "period,pool,amount,currency,driver\n";
        let cases = [
            (
                "2026-01,p,1.00,USD\n",
                2,
                "malformed row: expected 5 fields",
            ),
            (
                "2026-01,p,1.00,USD,compute_seconds,eu\n",
                2,
                "malformed row: expected 5 fields",
            ),
            (
                "2026-01,\"p,1.00,USD,compute_seconds\n",
                2,
                "unterminated quoted field",
            ),
            (
                "2026-01,p,1.00,USD,gpu_seconds\n",
                2,
                "unknown driver metric \"gpu_seconds\"",
            ),
            (
                "2026-01,p,-5.00,USD,compute_seconds\n",
                2,
                "negative amount -5.00",
            ),
            (
                "2026-1,p,5.00,USD,compute_seconds\n",
                2,
                "period \"2026-1\" is not YYYY-MM",
            ),
            (
                "2026-01-01,p,5.00,USD,compute_seconds\n",
                2,
                "is not YYYY-MM",
            ),
            (
                "2026-01,p,5.00,EUR,compute_seconds\n",
                2,
                "currency \"EUR\" does not match the configured currency USD",
            ),
            (
                "2026-01,p,1e3,USD,compute_seconds\n",
                2,
                "amount \"1e3\" is not a decimal number",
            ),
            (
                "2026-01,p,0.001,USD,compute_seconds\n",
                2,
                "more than 2 decimal places",
            ),
            (
                "2026-01,,1,USD,compute_seconds\n",
                2,
                "the pool name is empty",
            ),
            (
                "2026-01,p,1,USD,compute_seconds\n\n2026-01,p,2,USD,egress_bytes\n",
                4,
                "duplicate pool \"p\" for period 2026-01 (first on row 2)",
            ),
        ];
        for (body, row, problem) in cases {
            let err = parse_costs_csv(&format!("{header}{body}"), &MetricCatalog::default(), "USD")
                .unwrap_err();
            let QueryError::Costs {
                row: got,
                problem: text,
            } = &err
            else {
                panic!("{err:?}");
            };
            assert_eq!(*got, row, "{body}");
            assert!(text.contains(problem), "{body}: {text}");
            assert!(
                err.to_string()
                    .starts_with(&format!("costs file row {row}: ")),
                "{err}"
            );
        }
        let err =
            parse_costs_csv("period,pool,cost\n", &MetricCatalog::default(), "USD").unwrap_err();
        assert!(matches!(err, QueryError::Costs { row: 1, .. }), "{err}");
    }

    proptest! {
        #[test]
        fn amounts_are_non_negative_and_add_up_to_the_pool(
            cents in 0u64..10_000_000_000,
            quantities in prop::collection::btree_map("[a-z]{1,3}", 0u64..1_000_000_000_000_000, 0..12),
        ) {
            let quantities: BTreeMap<String, BigDecimal> = quantities
                .into_iter()
                .map(|(t, q)| (t, BigDecimal::new(q.into(), 12)))
                .collect();
            let pool = pool(&BigDecimal::new(cents.into(), 2).to_string());
            let rows = allocate(&pool, &quantities).unwrap();
            let sum: BigDecimal = rows.iter().map(|r| &r.amount).sum();
            prop_assert_eq!(sum, pool.amount.clone());
            let total: BigDecimal = quantities.values().sum();
            for r in &rows {
                prop_assert!(r.amount >= BigDecimal::zero());
                if r.tenant_id != UNALLOCATED_TENANT {
                    // Within one cent of the exact share.
                    let exact = &pool.amount * &r.driver_quantity / &total;
                    prop_assert!((&r.amount - exact).abs() < d("0.01"));
                }
            }
        }
    }
}
