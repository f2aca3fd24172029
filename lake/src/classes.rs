//! Summing counter events per match class (docs/reference.md#dimensional-rates).
//!
//! A counter whose rates match on dimensions is priced per event by the rate
//! its values satisfy. Events that satisfy the same matches (one
//! [`MatchClasses`] class) are priced alike, so their sum per tenant and day
//! is all an invoice needs, whatever their values are. [`ClassFold`] sums
//! events that way, keeping the least of its members' values (compared
//! dimension by dimension in order) to stand for each class: a real member's,
//! so it satisfies exactly the class's matches. The rollups keep these sums,
//! and reports fold the events they read raw the same way.

use std::collections::{BTreeMap, HashMap};

use allot_schemas::config::{Dimension, MatchClasses};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Date32Type, Decimal128Type, TimestampMicrosecondType};
use bigdecimal::BigDecimal;
use bigdecimal::num_bigint::BigInt;
use datafusion::logical_expr::{Expr, cast, col, lit, when};
use datafusion::prelude::DataFrame;
use futures::StreamExt;

use allot_schemas::decimal::VALUE_SCALE;

use crate::columns::{string_column, typed, utc_micros, value_type};
use crate::error::LakeError;
use crate::meters::dimension_value;

/// A class's events of one tenant, UTC day (days since the epoch) and
/// metric: the tenant's and the metric's numbers in the fold, the day, and
/// the class's bits ([`MatchClasses::class_of`]).
type ClassKey = (usize, i32, usize, Vec<u64>);

/// The exact sum of a class's values: an `i128` of the lake's scale while it
/// fits, a big integer past that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScaledSum {
    /// Fits the lake's `Decimal128`'s integer.
    Small(i128),
    /// Larger than an `i128`.
    Big(BigInt),
}

impl ScaledSum {
    /// Adds `value`, an integer of the lake's scale.
    pub fn add(&mut self, value: i128) {
        match self {
            ScaledSum::Small(sum) => match sum.checked_add(value) {
                Some(total) => *sum = total,
                None => *self = ScaledSum::Big(BigInt::from(*sum) + value),
            },
            ScaledSum::Big(sum) => *sum += value,
        }
    }

    /// Adds another sum.
    pub fn merge(&mut self, other: &ScaledSum) {
        match other {
            ScaledSum::Small(value) => self.add(*value),
            ScaledSum::Big(value) => {
                let total = match self {
                    ScaledSum::Small(sum) => BigInt::from(*sum) + value,
                    ScaledSum::Big(sum) => &*sum + value,
                };
                *self = ScaledSum::Big(total);
            }
        }
    }

    /// The sum as an exact decimal.
    pub fn to_decimal(&self) -> BigDecimal {
        let digits = match self {
            ScaledSum::Small(sum) => BigInt::from(*sum),
            ScaledSum::Big(sum) => sum.clone(),
        };
        BigDecimal::new(digits, i64::from(VALUE_SCALE))
    }
}

/// What a class's events of one tenant, day and metric add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSum {
    /// How many events.
    pub events: i64,
    /// The sum of their values.
    pub value_sum: ScaledSum,
    /// The earliest `ts`, UTC microseconds.
    pub first_ts: i64,
    /// The latest `ts`, UTC microseconds.
    pub last_ts: i64,
    /// The least of the members' values of the metric's
    /// [`MatchClasses::dimensions`], in that order.
    pub values: Vec<Option<String>>,
}

/// Sums counter events per (tenant, day, metric, class), each metric by its
/// own classes.
pub struct ClassFold<'a> {
    classes: &'a BTreeMap<String, MatchClasses>,
    /// Every dimension some metric's classes read, in the order of the value
    /// columns of [`ClassFold::event_columns`].
    read: Vec<Dimension>,
    /// Per metric, in the order of `classes`: where each of its dimensions
    /// is among `read`.
    positions: Vec<Vec<usize>>,
    /// The tenants seen, numbered in the order met.
    tenants: HashMap<String, usize>,
    /// The sums so far.
    sums: HashMap<ClassKey, ClassSum>,
}

impl<'a> ClassFold<'a> {
    /// A fold of the metrics of `classes`, each by its classes.
    pub fn new(classes: &'a BTreeMap<String, MatchClasses>) -> ClassFold<'a> {
        let mut read: Vec<Dimension> = classes
            .values()
            .flat_map(|c| c.dimensions().iter().cloned())
            .collect();
        read.sort();
        read.dedup();
        let positions = classes
            .values()
            .map(|c| {
                c.dimensions()
                    .iter()
                    .map(|d| read.iter().position(|r| r == d).expect("read has it"))
                    .collect()
            })
            .collect();
        ClassFold {
            classes,
            read,
            positions,
            tenants: HashMap::new(),
            sums: HashMap::new(),
        }
    }

    /// The sums per (tenant, day, metric) and class, in no order.
    pub fn into_sums(self) -> impl Iterator<Item = ((String, i32, String), ClassSum)> {
        let mut tenants = vec![String::new(); self.tenants.len()];
        for (tenant, number) in self.tenants {
            tenants[number] = tenant;
        }
        let metrics: Vec<&String> = self.classes.keys().collect();
        self.sums
            .into_iter()
            .map(move |((tenant, day, metric, _), sum)| {
                let key = (tenants[tenant].clone(), day, metrics[metric].clone());
                (key, sum)
            })
    }

    /// Adds every event of `events` (rows of `usage_events`) of the fold's
    /// metrics, streamed.
    pub async fn sum_events(mut self, events: DataFrame) -> Result<ClassFold<'a>, LakeError> {
        let mut stream = self
            .event_columns(events)?
            .execute_stream()
            .await
            .map_err(LakeError::from)?;
        while let Some(batch) = stream.next().await {
            self.add_events(&batch.map_err(LakeError::from)?)?;
        }
        Ok(self)
    }

    /// The events of `events` of the fold's metrics as the columns
    /// [`ClassFold::add_events`] reads: `tenant_id`, `day`, `metric`, `ts`,
    /// `value`, then the value of each dimension read, as text (null for the
    /// metrics that do not use it, so it is read only where needed).
    fn event_columns(&self, events: DataFrame) -> Result<DataFrame, LakeError> {
        let metrics: Vec<Expr> = self.classes.keys().map(|m| lit(m.as_str())).collect();
        let mut columns = vec![
            cast(col("tenant_id"), DataType::Utf8).alias("tenant_id"),
            col("day"),
            cast(col("metric"), DataType::Utf8).alias("metric"),
            col("ts"),
            col("value"),
        ];
        for (i, dimension) in self.read.iter().enumerate() {
            let users: Vec<Expr> = self
                .classes
                .iter()
                .filter(|(_, c)| c.dimensions().contains(dimension))
                .map(|(metric, _)| lit(metric.as_str()))
                .collect();
            let value = when(
                col("metric").in_list(users, false),
                cast(dimension_value(dimension), DataType::Utf8),
            )
            .end()
            .map_err(LakeError::from)?;
            columns.push(value.alias(format!("dimension_{i}")));
        }
        events
            .filter(col("metric").in_list(metrics, false))
            .and_then(|rows| rows.select(columns))
            .map_err(LakeError::from)
    }

    /// Adds a batch of [`ClassFold::event_columns`].
    fn add_events(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        let tenants = string_column(batch, 0)?;
        let days = typed(batch, 1, &DataType::Date32)?;
        let days = days.as_primitive::<Date32Type>();
        let metrics = string_column(batch, 2)?;
        let times = typed(batch, 3, &utc_micros())?;
        let times = times.as_primitive::<TimestampMicrosecondType>();
        let values = typed(batch, 4, &value_type())?;
        let values = values.as_primitive::<Decimal128Type>();
        let dimensions = (0..self.read.len())
            .map(|i| string_column(batch, 5 + i))
            .collect::<Result<Vec<_>, _>>()?;
        let metric_names: Vec<&str> = self.classes.keys().map(String::as_str).collect();
        let mut own: Vec<Option<&str>> = Vec::new();
        // The key of the row at hand, reused so that finding a class allocates nothing.
        let mut key: ClassKey = (0, 0, 0, Vec::new());
        for row in 0..batch.num_rows() {
            let Some(metric) = metric_names.iter().position(|m| *m == metrics.value(row)) else {
                continue;
            };
            let classes = &self.classes[metric_names[metric]];
            own.clear();
            own.extend(self.positions[metric].iter().map(|&i| {
                let column = &dimensions[i];
                column.is_valid(row).then(|| column.value(row))
            }));
            let tenant = tenants.value(row);
            key.0 = match self.tenants.get(tenant) {
                Some(number) => *number,
                None => {
                    let number = self.tenants.len();
                    self.tenants.insert(tenant.to_string(), number);
                    number
                }
            };
            key.1 = days.value(row);
            key.2 = metric;
            classes.class_of(&own, &mut key.3);
            let (ts, value) = (times.value(row), values.value(row));
            match self.sums.get_mut(&key) {
                Some(sum) => {
                    sum.events += 1;
                    sum.value_sum.add(value);
                    sum.first_ts = sum.first_ts.min(ts);
                    sum.last_ts = sum.last_ts.max(ts);
                    if own
                        .iter()
                        .copied()
                        .lt(sum.values.iter().map(Option::as_deref))
                    {
                        sum.values = own.iter().map(|v| v.map(str::to_string)).collect();
                    }
                }
                None => {
                    self.sums.insert(
                        key.clone(),
                        ClassSum {
                            events: 1,
                            value_sum: ScaledSum::Small(value),
                            first_ts: ts,
                            last_ts: ts,
                            values: own.iter().map(|v| v.map(str::to_string)).collect(),
                        },
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use allot_schemas::config::{Glob, RateMatch};
    use arrow::array::{
        ArrayRef, Date32Array, Decimal128Array, StringArray, TimestampMicrosecondArray,
    };
    use proptest::prelude::*;

    use super::*;

    const PATTERNS: [&str; 8] = [
        "eu-*",
        "eu-west-1",
        "*",
        "us-*",
        "m7g.*",
        "c7*",
        "gpu",
        "api",
    ];
    const VALUES: [&str; 7] = [
        "eu-west-1",
        "eu-north-1",
        "us-east-1",
        "m7g.large",
        "c7i",
        "gpu",
        "api",
    ];

    fn dimension(i: usize) -> Dimension {
        [
            Dimension::Region,
            Dimension::Service,
            Dimension::Label("class".to_string()),
        ][i % 3]
            .clone()
    }

    /// One metric's events (values of the three dimensions, each maybe
    /// missing, and a value) as the columns `event_columns` gives.
    fn batch(fold: &ClassFold, events: &[([Option<usize>; 3], i64)]) -> RecordBatch {
        let n = events.len();
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["t"; n])),
            Arc::new(Date32Array::from(vec![20_000; n])),
            Arc::new(StringArray::from(vec!["m"; n])),
            Arc::new(
                TimestampMicrosecondArray::from((0..n as i64).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(
                Decimal128Array::from(
                    events
                        .iter()
                        .map(|(_, v)| i128::from(*v))
                        .collect::<Vec<_>>(),
                )
                .with_precision_and_scale(38, 9)
                .unwrap(),
            ),
        ];
        for read in &fold.read {
            let at = (0..3).find(|&i| dimension(i) == *read).unwrap();
            columns.push(Arc::new(StringArray::from(
                events
                    .iter()
                    .map(|(dims, _)| dims[at].map(|v| VALUES[v]))
                    .collect::<Vec<_>>(),
            )));
        }
        let fields: Vec<arrow::datatypes::Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                arrow::datatypes::Field::new(format!("c{i}"), c.data_type().clone(), true)
            })
            .collect();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap()
    }

    proptest! {
        /// Every event is summed in the class of the matches it satisfies, and
        /// the values kept for a class satisfy exactly those matches, so
        /// pricing them prices each member alike.
        #[test]
        fn each_class_stands_for_its_members(
            matches in prop::collection::vec(
                prop::collection::vec((0usize..3, 0usize..PATTERNS.len()), 1..3),
                1..5,
            ),
            events in prop::collection::vec(
                (prop::array::uniform3(prop::option::of(0usize..VALUES.len())), -50i64..1000),
                1..60,
            ),
        ) {
            let classes = MatchClasses::new(matches.iter().map(|pairs| {
                let mut seen = Vec::new();
                RateMatch::new(
                    pairs
                        .iter()
                        .filter(|(d, _)| !seen.contains(d) && { seen.push(*d); true })
                        .map(|(d, p)| (dimension(*d), Glob::new(PATTERNS[*p])))
                        .collect(),
                )
            }));
            let by_metric = BTreeMap::from([("m".to_string(), classes.clone())]);
            let mut fold = ClassFold::new(&by_metric);
            fold.add_events(&batch(&fold, &events)).unwrap();
            let mut expected: HashMap<Vec<u64>, (i64, i128)> = HashMap::new();
            for (dims, value) in &events {
                let own: Vec<Option<&str>> = classes
                    .dimensions()
                    .iter()
                    .map(|d| {
                        let at = (0..3).find(|&i| dimension(i) == *d).unwrap();
                        dims[at].map(|v| VALUES[v])
                    })
                    .collect();
                let mut class = Vec::new();
                classes.class_of(&own, &mut class);
                let entry = expected.entry(class).or_default();
                entry.0 += 1;
                entry.1 += i128::from(*value);
            }
            prop_assert_eq!(fold.sums.len(), expected.len());
            for ((_, _, _, summed), sum) in &fold.sums {
                let values: Vec<Option<&str>> = sum.values.iter().map(Option::as_deref).collect();
                let mut class = Vec::new();
                classes.class_of(&values, &mut class);
                prop_assert_eq!(&class, summed);
                let (events, total) = expected[&class];
                prop_assert_eq!(sum.events, events);
                prop_assert_eq!(&sum.value_sum, &ScaledSum::Small(total));
            }
        }
    }

    #[test]
    fn sums_past_an_i128_stay_exact() {
        let mut sum = ScaledSum::Small(i128::MAX - 1);
        sum.add(5);
        sum.add(-3);
        assert_eq!(
            sum,
            ScaledSum::Big(BigInt::from(i128::MAX) + BigInt::from(1))
        );
        assert_eq!(
            sum.to_decimal(),
            BigDecimal::new(BigInt::from(i128::MAX) + 1, 9)
        );
    }
}
