//! Aggregating the lake into the inputs of the reports.
//!
//! Each function runs one DataFusion query over the deduplicated `usage_events`
//! (or `rejected_events`) of a [`LakeSession`] and returns exact decimals: raw sums
//! of counters per UTC day, gauge samples per series, usage per time bucket,
//! recent activity. Time ranges are half-open `[from, to)` in UTC microseconds and
//! are also turned into `day` bounds, so only the partitions of the range are read.
//!
//! When the session has rollups attached, the whole days of a range whose
//! rollups are up to date are read from `usage_hourly` instead of their events
//! (hourly sums for counters and activity, pre-weighted days for gauges); the
//! edges of the range and every other partition are read raw, and both kinds of
//! rows go through the same aggregation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use allot_lake::classes::{ClassFold, ScaledSum};
use allot_lake::columns::{decimal_at, string_column, typed, utc_micros, value_type};
use allot_lake::meters::{MeterFold, MeterKey, ROLLUP_METER_COLUMNS, meter_event_columns};
use allot_lake::session::LakeSession;
use allot_lake::snapshot::partition_date;
use allot_schemas::config::{MatchClasses, MetricCatalog};
use allot_schemas::gauge::{GaugeSample, GaugeSeries, HeldSum};
use allot_schemas::layout::{RollupRows, TenantDay};
use allot_schemas::meter::MeterSummary;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use arrow_schema::DataType;
use bigdecimal::BigDecimal;
use bigdecimal::Zero;
use chrono::{Datelike, Months, NaiveDate};
use datafusion::common::ScalarValue;
use datafusion::functions::expr_fn::date_bin;
use datafusion::functions_aggregate::expr_fn::{count, max, sum};
use datafusion::logical_expr::Expr;
use datafusion::prelude::{DataFrame, cast, col, lit};
use futures::StreamExt;

use allot_schemas::time::{
    MICROS_PER_DAY, MICROS_PER_HOUR, date_of_micros, day_start_micros, days_since_epoch,
};

use crate::error::QueryError;
use crate::noisy::BucketUsage;
use crate::pricing::{CounterDay, DimensionValues, MeterDay};

/// Which events of the session an aggregation reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only events with this region.
    pub region: Option<String>,
    /// Only events with this service.
    pub service: Option<String>,
}

/// An instant as a `Timestamp(µs, UTC)` literal.
fn ts_lit(micros: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(micros),
        Some("UTC".into()),
    ))
}

fn day_lit(day: NaiveDate) -> Expr {
    lit(ScalarValue::Date32(Some(days_since_epoch(day))))
}

/// The first and last UTC day of `[from, to)`.
fn day_span(from: i64, to: i64) -> (NaiveDate, NaiveDate) {
    (
        date_of_micros(from).unwrap_or(NaiveDate::MIN),
        date_of_micros(to.saturating_sub(1)).unwrap_or(NaiveDate::MAX),
    )
}

/// `from ≤ ts < to`, plus the matching `day` bounds for partition pruning.
fn time_range(from: i64, to: i64) -> Expr {
    let (first_day, last_day) = day_span(from, to);
    col("day")
        .gt_eq(day_lit(first_day))
        .and(col("day").lt_eq(day_lit(last_day)))
        .and(col("ts").gt_eq(ts_lit(from)))
        .and(col("ts").lt(ts_lit(to)))
}

fn metric_in(metrics: &[String]) -> Expr {
    col("metric").in_list(metrics.iter().map(|m| lit(m.as_str())).collect(), false)
}

/// The events of `[from, to)` that `filter` selects, split between the
/// partitions read raw and those read from their rollups.
struct SplitUsage {
    /// Deduplicated events of the partitions read raw, filtered.
    raw: DataFrame,
    /// `usage_hourly` rows of the range's inner span, for the partitions whose
    /// rollups are up to date (`None`: every partition is read raw).
    rollups: Option<DataFrame>,
}

/// Splits the events of `[from, to)` between rollups and raw events. With a
/// `grain` (an hour for the hourly rows, a day for the gauge rows) the range's
/// inner span `[from rounded up, to rounded down)` to that grain is read from the
/// rollups of every partition that has up-to-date ones, and the rest raw: the
/// edges of those partitions, and every other partition. No grain, or a region or
/// service filter (rollups do not keep them), reads everything raw. The rollups
/// are read from the files that may hold `rows` (class rows or the others).
async fn split_usage(
    session: &LakeSession,
    filter: &UsageFilter,
    from: i64,
    to: i64,
    grain: Option<i64>,
    rows: RollupRows,
) -> Result<SplitUsage, QueryError> {
    let mut served: BTreeMap<TenantDay, i64> = BTreeMap::new();
    let (mut inner_from, mut inner_to) = (from, from);
    if let Some(grain) = grain
        && filter.region.is_none()
        && filter.service.is_none()
    {
        inner_from = ceil_to_grid(from, grain);
        inner_to = to.div_euclid(grain) * grain;
        if inner_from < inner_to {
            let (first_day, last_day) = day_span(inner_from, inner_to);
            served = session
                .current_rollups_between(first_day, last_day)
                .await?
                .into_iter()
                .filter(|(key, _)| {
                    let start = day_start_micros(key.day);
                    start < inner_to
                        && start + MICROS_PER_DAY > inner_from
                        && filter.tenant.as_ref().is_none_or(|t| *t == key.tenant_id)
                })
                .collect();
        }
    }
    let mut filters = Vec::new();
    if let Some(tenant) = &filter.tenant {
        filters.push(col("tenant_id").eq(lit(tenant.as_str())));
    }
    if let Some(region) = &filter.region {
        filters.push(col("region").eq(lit(region.as_str())));
    }
    if let Some(service) = &filter.service {
        filters.push(col("service").eq(lit(service.as_str())));
    }
    let with_filters = |predicate: Expr| filters.iter().cloned().fold(predicate, Expr::and);
    let served_keys: HashSet<(&str, NaiveDate)> = served
        .keys()
        .map(|key| (key.tenant_id.as_str(), key.day))
        .collect();
    let is_served = |tenant: &str, day: NaiveDate| served_keys.contains(&(tenant, day));
    // Partitions outside the range are not read (only looked up as neighbours).
    let (first_day, last_day) = day_span(from, to);
    let in_range = |tenant: &str, day: NaiveDate| {
        day >= first_day && day <= last_day && filter.tenant.as_ref().is_none_or(|t| t == tenant)
    };
    let mut raw = session
        .usage_events_where(|tenant, day| in_range(tenant, day) && !is_served(tenant, day))?
        .filter(with_filters(time_range(from, to)))
        .map_err(QueryError::from)?;
    // The edges of the served partitions, outside the inner span.
    let edges: Vec<(i64, i64)> = [(from, inner_from), (inner_to, to)]
        .into_iter()
        .filter(|(start, end)| start < end)
        .collect();
    let touches_edge = |day: NaiveDate| {
        let start = day_start_micros(day);
        edges
            .iter()
            .any(|(from, to)| start < *to && start + MICROS_PER_DAY > *from)
    };
    if !served.is_empty() && served.keys().any(|key| touches_edge(key.day)) {
        let in_edges = edges
            .iter()
            .map(|(from, to)| time_range(*from, *to))
            .reduce(Expr::or)
            .expect("an edge touches a served day");
        let edge_rows = session
            .usage_events_where(|tenant, day| is_served(tenant, day) && touches_edge(day))?
            .filter(with_filters(in_edges))
            .map_err(QueryError::from)?;
        raw = raw.union(edge_rows).map_err(QueryError::from)?;
    }
    let rollups = session
        .rollup_rows(&served, rows)?
        .map(|rows| {
            rows.filter(
                col("start")
                    .gt_eq(ts_lit(inner_from))
                    .and(col("start").lt(ts_lit(inner_to))),
            )
            .map_err(QueryError::from)
        })
        .transpose()?;
    Ok(SplitUsage { raw, rollups })
}

/// A string column as `Utf8` under its own name, so raw and rollup rows union.
fn utf8(name: &str) -> Expr {
    cast(col(name), DataType::Utf8).alias(name)
}

impl SplitUsage {
    /// The raw events and the hourly rollup rows of `metrics` (every metric when
    /// `None`) as one frame: `raw_columns` of each event, `rollup_columns` (the
    /// same names and types) of each rollup row.
    fn union_hourly(
        self,
        metrics: Option<&[String]>,
        raw_columns: Vec<Expr>,
        rollup_columns: Vec<Expr>,
    ) -> Result<DataFrame, QueryError> {
        let mut raw = self.raw;
        if let Some(metrics) = metrics {
            raw = raw.filter(metric_in(metrics)).map_err(QueryError::from)?;
        }
        let raw = raw.select(raw_columns).map_err(QueryError::from)?;
        match self.rollups {
            None => Ok(raw),
            Some(rollups) => hourly_rows(rollups, metrics)?
                .select(rollup_columns)
                .and_then(|rows| raw.union(rows))
                .map_err(QueryError::from),
        }
    }
}

/// The hourly rows (neither gauge nor class rows) of a rollup frame for
/// `metrics` (all when `None`).
fn hourly_rows(rollups: DataFrame, metrics: Option<&[String]>) -> Result<DataFrame, QueryError> {
    let mut predicate = col("gauge")
        .eq(lit(false))
        .and(col("dimension_values").is_null());
    if let Some(metrics) = metrics {
        predicate = predicate.and(metric_in(metrics));
    }
    rollups.filter(predicate).map_err(QueryError::from)
}

async fn collect(frame: DataFrame) -> Result<Vec<RecordBatch>, QueryError> {
    frame.collect().await.map_err(QueryError::from)
}

/// The first `N` columns of `batch` as Arrow strings.
fn leading_strings<const N: usize>(batch: &RecordBatch) -> Result<[StringArray; N], QueryError> {
    let mut columns = Vec::with_capacity(N);
    for i in 0..N {
        columns.push(string_column(batch, i)?);
    }
    Ok(columns.try_into().expect("N columns were cast"))
}

/// [`split_usage`] on the hour grid, the rollups read from their hourly rows.
async fn split_hourly(
    session: &LakeSession,
    filter: &UsageFilter,
    from: i64,
    to: i64,
) -> Result<SplitUsage, QueryError> {
    let hour = Some(MICROS_PER_HOUR);
    split_usage(session, filter, from, to, hour, RollupRows::Hourly).await
}

/// The text at `row` of `array`, a column of [`DataType::Utf8`].
fn string_at(array: &ArrayRef, row: usize) -> Option<String> {
    let strings = array.as_string::<i32>();
    strings
        .is_valid(row)
        .then(|| strings.value(row).to_string())
}

/// Raw sums of counter `metrics` per (tenant, metric, UTC day) over `[from, to)`.
pub async fn counter_days(
    session: &LakeSession,
    filter: &UsageFilter,
    metrics: &[String],
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Vec<CounterDay>>, QueryError> {
    let mut by_tenant: BTreeMap<String, Vec<CounterDay>> = BTreeMap::new();
    if metrics.is_empty() {
        return Ok(by_tenant);
    }
    let frame = split_hourly(session, filter, from, to)
        .await?
        .union_hourly(
            Some(metrics),
            vec![
                utf8("tenant_id"),
                utf8("metric"),
                col("day"),
                col("value").alias("amount"),
            ],
            vec![
                utf8("tenant_id"),
                utf8("metric"),
                col("day"),
                col("value_sum").alias("amount"),
            ],
        )?
        .aggregate(
            vec![col("tenant_id"), col("metric"), col("day")],
            vec![sum(col("amount")).alias("raw_sum")],
        )
        .map_err(QueryError::from)?;
    for batch in collect(frame).await? {
        let (tenants, names, sums) = (
            typed(&batch, 0, &DataType::Utf8)?,
            typed(&batch, 1, &DataType::Utf8)?,
            typed(&batch, 3, &value_type())?,
        );
        let days = batch.column(2).as_primitive::<Date32Type>().clone();
        for row in 0..batch.num_rows() {
            let (Some(tenant), Some(metric)) = (string_at(&tenants, row), string_at(&names, row))
            else {
                continue;
            };
            let day = partition_date(days.value(row))?;
            by_tenant.entry(tenant).or_default().push(CounterDay {
                metric,
                day,
                raw_sum: decimal_at(&sums, row),
                dimensions: Vec::new(),
            });
        }
    }
    Ok(by_tenant)
}

/// How the counters whose rates match on dimensions are summed for some price
/// books to price (docs/reference.md#dimensional-rates): per class of events
/// the books' matches tell apart, and per stretch of days in which none of
/// their prices changes. Pricing tells no two days of a stretch apart, so a
/// month of a class is one sum instead of one per day.
#[derive(Debug, Clone, Default)]
pub struct ClassGrouping {
    /// Per such counter, the classes of its events.
    pub classes: BTreeMap<String, MatchClasses>,
    /// The days on which a price of one of those counters starts, in any of
    /// the books, for any tenant.
    pub price_days: BTreeSet<NaiveDate>,
}

/// Sums of the counters of a [`ClassGrouping`] per (tenant, metric, class,
/// stretch). The class of each distinct list of values is found once.
struct StretchSums<'a> {
    grouping: &'a ClassGrouping,
    /// The days each stretch starts on (days since the epoch), ascending: the
    /// first day read, the first of each month after it and the price days
    /// between.
    starts: Vec<i32>,
    /// The metrics of the grouping, numbered in its order.
    metrics: Vec<&'a str>,
    tenants: Vec<String>,
    tenant_numbers: FastMap<String, u32>,
    /// Per metric, the class number of each list of values met, by its
    /// [`values_key`].
    class_of_values: Vec<FastMap<Vec<u8>, u32>>,
    /// The class numbers, by metric and class ([`MatchClasses::class_of`]).
    class_numbers: HashMap<(usize, Vec<u64>), u32>,
    /// Per class number, the least of the values met of its members: a
    /// member's, so it stands for the class.
    class_values: Vec<DimensionValues>,
    /// (tenant, metric, class, stretch) → sum.
    sums: FastMap<(u32, u32, u32, u32), ScaledSum>,
}

/// A map hashed for speed: [`StretchSums`] looks one up per row read, by
/// keys no outsider chooses against it (hash flooding needs a fixed hash;
/// this one is seeded at random).
type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

impl<'a> StretchSums<'a> {
    fn new(grouping: &'a ClassGrouping, from: i64, to: i64) -> Self {
        let (first, last) = day_span(from, to);
        let mut starts: BTreeSet<NaiveDate> =
            grouping.price_days.range(first..=last).copied().collect();
        starts.insert(first);
        let mut month = first.with_day(1).unwrap_or(first);
        while let Some(next) = month.checked_add_months(Months::new(1))
            && next <= last
        {
            starts.insert(next);
            month = next;
        }
        let metrics: Vec<&str> = grouping.classes.keys().map(String::as_str).collect();
        StretchSums {
            grouping,
            starts: starts.into_iter().map(days_since_epoch).collect(),
            class_of_values: vec![FastMap::default(); metrics.len()],
            metrics,
            tenants: Vec::new(),
            tenant_numbers: FastMap::default(),
            class_numbers: HashMap::new(),
            class_values: Vec::new(),
            sums: FastMap::default(),
        }
    }

    fn tenant_number(&mut self, tenant: &str) -> u32 {
        if let Some(number) = self.tenant_numbers.get(tenant) {
            return *number;
        }
        let number = self.tenants.len() as u32;
        self.tenants.push(tenant.to_string());
        self.tenant_numbers.insert(tenant.to_string(), number);
        number
    }

    /// The number of the class of metric number `metric` that `values` (of
    /// its dimensions, whose [`values_key`] is `key`) are in.
    fn class_number(&mut self, metric: usize, key: &[u8], values: &[Option<&str>]) -> u32 {
        if let Some(number) = self.class_of_values[metric].get(key) {
            return *number;
        }
        let mut bits = Vec::new();
        self.grouping.classes[self.metrics[metric]].class_of(values, &mut bits);
        let next = self.class_values.len() as u32;
        let number = *self.class_numbers.entry((metric, bits)).or_insert(next);
        let owned = || values.iter().map(|v| v.map(str::to_string)).collect();
        if number == next {
            self.class_values.push(owned());
        } else if values.iter().copied().lt(self.class_values[number as usize]
            .iter()
            .map(Option::as_deref))
        {
            self.class_values[number as usize] = owned();
        }
        self.class_of_values[metric].insert(key.to_vec(), number);
        number
    }

    /// The number of the stretch `day` (days since the epoch) is in.
    fn stretch_of(&self, day: i32) -> u32 {
        self.starts.partition_point(|&start| start <= day).max(1) as u32 - 1
    }

    fn add(&mut self, (tenant, metric, class): (u32, usize, u32), day: i32, sum: &ScaledSum) {
        let key = (tenant, metric as u32, class, self.stretch_of(day));
        match self.sums.get_mut(&key) {
            Some(total) => total.merge(sum),
            None => {
                self.sums.insert(key, sum.clone());
            }
        }
    }

    /// Adds the sums of a fold of the grouping's events.
    fn add_fold(&mut self, fold: ClassFold<'_>) {
        let mut key = Vec::new();
        for ((tenant, day, metric), sum) in fold.into_sums() {
            let Some(m) = self.metrics.iter().position(|name| *name == metric) else {
                continue;
            };
            let values: Vec<Option<&str>> = sum.values.iter().map(Option::as_deref).collect();
            values_key(values.iter().copied(), &mut key);
            let class = self.class_number(m, &key, &values);
            let tenant = self.tenant_number(&tenant);
            self.add((tenant, m, class), day, &sum.value_sum);
        }
    }

    /// Adds the class rows of `rollups` of the metrics of `rolled_up` (whose
    /// stored classes refine the grouping's), each with its values of the
    /// dimensions of the metric's classes in the grouping.
    async fn add_class_rows(
        &mut self,
        session: &LakeSession,
        rollups: DataFrame,
        rolled_up: &[&str],
    ) -> Result<(), QueryError> {
        let names: Vec<String> = rolled_up.iter().map(|m| m.to_string()).collect();
        let rows = rollups
            .filter(col("dimension_values").is_not_null().and(metric_in(&names)))
            .and_then(|rows| {
                rows.select(vec![
                    utf8("tenant_id"),
                    utf8("metric"),
                    col("day"),
                    col("value_sum"),
                    col("dimension_values"),
                ])
            })
            .map_err(QueryError::from)?;
        // Per metric, where each dimension it is read by sits among the stored ones.
        let positions: Vec<Vec<Option<usize>>> = self
            .grouping
            .classes
            .iter()
            .map(|(metric, classes)| {
                let stored = session
                    .rollup_classes(metric)
                    .map_or(&[][..], |stored| stored.dimensions());
                classes
                    .dimensions()
                    .iter()
                    .map(|d| stored.iter().position(|s| s == d))
                    .collect()
            })
            .collect();
        let mut key = Vec::new();
        // Streamed: a month of class rows is summed without being held.
        let mut batches = rows.execute_stream().await.map_err(QueryError::from)?;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(QueryError::from)?;
            let tenants = string_column(&batch, 0)?;
            let names = string_column(&batch, 1)?;
            let days = batch.column(2).as_primitive::<Date32Type>().clone();
            let sums = typed(&batch, 3, &value_type())?;
            let sums = sums.as_primitive::<Decimal128Type>();
            // Each row's values, read where they sit in the list's one text column.
            let lists = batch.column(4).as_list::<i32>();
            let offsets = lists.value_offsets();
            let values =
                arrow::compute::cast(lists.values(), &DataType::Utf8).map_err(QueryError::from)?;
            let values = values.as_string::<i32>();
            let mut own: Vec<Option<&str>> = Vec::new();
            // A run of rows of one tenant looks its number up once.
            let mut tenant: Option<(&str, u32)> = None;
            for row in 0..batch.num_rows() {
                if tenants.is_null(row) || names.is_null(row) || sums.is_null(row) {
                    continue;
                }
                let Some(m) = self.metrics.iter().position(|n| *n == names.value(row)) else {
                    continue;
                };
                let (first, end) = (offsets[row] as usize, offsets[row + 1] as usize);
                own.clear();
                own.extend(positions[m].iter().map(|i| {
                    i.map(|i| first + i)
                        .filter(|&i| i < end && values.is_valid(i))
                        .map(|i| values.value(i))
                }));
                values_key(own.iter().copied(), &mut key);
                let class = self.class_number(m, &key, &own);
                let name = tenants.value(row);
                let t = match tenant {
                    Some((last, t)) if last == name => t,
                    _ => self.tenant_number(name),
                };
                tenant = Some((name, t));
                let sum = ScaledSum::Small(sums.value(row));
                self.add((t, m, class), days.value(row), &sum);
            }
        }
        Ok(())
    }

    /// The sums, each dated on the first day of its stretch.
    fn into_counter_days(self) -> Result<BTreeMap<String, Vec<CounterDay>>, QueryError> {
        let mut by_tenant: BTreeMap<String, Vec<CounterDay>> = BTreeMap::new();
        for ((tenant, metric, class, stretch), sum) in self.sums {
            by_tenant
                .entry(self.tenants[tenant as usize].clone())
                .or_default()
                .push(CounterDay {
                    metric: self.metrics[metric as usize].to_string(),
                    day: partition_date(self.starts[stretch as usize])?,
                    raw_sum: sum.to_decimal(),
                    dimensions: self.class_values[class as usize].clone(),
                });
        }
        Ok(by_tenant)
    }
}

/// Writes values into `key` so that two lists of values have the same key
/// exactly when they are equal: each value's length (a `u32`, or `u32::MAX`
/// for none) and then its bytes.
fn values_key<'v>(values: impl Iterator<Item = Option<&'v str>>, key: &mut Vec<u8>) {
    key.clear();
    for value in values {
        let text = value.unwrap_or_default();
        let length = value.map_or(u32::MAX, |text| text.len() as u32);
        key.extend_from_slice(&length.to_le_bytes());
        key.extend_from_slice(text.as_bytes());
    }
}

/// Raw sums of the counters of `grouping` per (tenant, metric, match class,
/// stretch) over `[from, to)` ([`ClassGrouping`]), each [`CounterDay`] dated
/// on its stretch's first day and carrying the values of its class's least
/// member of the dimensions of the metric's classes in `grouping`, in their
/// order. A metric whose rollups were summed by classes that refine its
/// classes here (computed with a price book that tells apart at least the
/// same events) has the whole days of its partitions with current rollups read
/// from its class rows and the rest from its events; the other metrics are
/// read from their events alone, summed per class in one pass ([`ClassFold`]).
pub async fn dimensional_counter_days(
    session: &LakeSession,
    filter: &UsageFilter,
    grouping: &ClassGrouping,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Vec<CounterDay>>, QueryError> {
    let mut sums = StretchSums::new(grouping, from, to);
    let (rolled_up, raw_only): (
        BTreeMap<String, MatchClasses>,
        BTreeMap<String, MatchClasses>,
    ) = grouping
        .classes
        .iter()
        .map(|(m, c)| (m.clone(), c.clone()))
        .partition(|(metric, classes)| {
            session
                .rollup_classes(metric)
                .is_some_and(|stored| stored.refines(classes))
        });
    for (metrics, grain) in [(&rolled_up, Some(MICROS_PER_DAY)), (&raw_only, None)] {
        if metrics.is_empty() {
            continue;
        }
        let split = split_usage(session, filter, from, to, grain, RollupRows::Classes).await?;
        sums.add_fold(ClassFold::new(metrics).sum_events(split.raw).await?);
        if let Some(rollups) = split.rollups {
            let names: Vec<&str> = metrics.keys().map(String::as_str).collect();
            sums.add_class_rows(session, rollups, &names).await?;
        }
    }
    sums.into_counter_days()
}

/// Summaries of the meter `metrics` (`max`, `unique_count`, `latest` metrics
/// of `catalog`) per (tenant, metric, bucket) over `[from, to)`, buckets of
/// `width` on the grid through `origin`. On an hour-aligned grid the whole
/// hours of partitions with up-to-date rollups are read from `usage_hourly`.
#[allow(clippy::too_many_arguments)]
pub async fn meter_buckets(
    session: &LakeSession,
    filter: &UsageFilter,
    catalog: &MetricCatalog,
    metrics: &[String],
    (from, to): (i64, i64),
    origin: i64,
    width: i64,
) -> Result<HashMap<MeterKey, MeterSummary>, QueryError> {
    if metrics.is_empty() {
        return Ok(HashMap::new());
    }
    let hourly_grid = width % MICROS_PER_HOUR == 0 && origin.rem_euclid(MICROS_PER_HOUR) == 0;
    let split = split_usage(
        session,
        filter,
        from,
        to,
        hourly_grid.then_some(MICROS_PER_HOUR),
        RollupRows::Hourly,
    )
    .await?;
    let mut fold = MeterFold::new(catalog, origin, width);
    let raw = meter_event_columns(split.raw, catalog, metrics)?;
    let mut stream = raw.execute_stream().await.map_err(QueryError::from)?;
    while let Some(batch) = stream.next().await {
        fold.add_events(&batch.map_err(QueryError::from)?)?;
    }
    if let Some(rollups) = split.rollups {
        let rows = hourly_rows(rollups, Some(metrics))?
            .select_columns(&ROLLUP_METER_COLUMNS)
            .map_err(QueryError::from)?;
        let mut stream = rows.execute_stream().await.map_err(QueryError::from)?;
        while let Some(batch) = stream.next().await {
            fold.add_rollups(&batch.map_err(QueryError::from)?)?;
        }
    }
    Ok(fold.summaries)
}

/// Summaries of the meter `metrics` per tenant, metric and UTC day over
/// `[from, to)`.
pub async fn meter_days(
    session: &LakeSession,
    filter: &UsageFilter,
    catalog: &MetricCatalog,
    metrics: &[String],
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Vec<MeterDay>>, QueryError> {
    let summaries = meter_buckets(
        session,
        filter,
        catalog,
        metrics,
        (from, to),
        0,
        MICROS_PER_DAY,
    )
    .await?;
    let mut by_tenant: BTreeMap<String, Vec<MeterDay>> = BTreeMap::new();
    for ((tenant, metric, start), summary) in summaries {
        let Some(day) = date_of_micros(start) else {
            continue;
        };
        by_tenant.entry(tenant).or_default().push(MeterDay {
            metric,
            day,
            summary,
        });
    }
    for days in by_tenant.values_mut() {
        days.sort_by(|a, b| (&a.metric, a.day).cmp(&(&b.metric, b.day)));
    }
    Ok(by_tenant)
}

/// Which samples [`gauge_series`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaugeSamples {
    /// Every sample: the caller weighs the series over ranges that need not be
    /// whole UTC days (charts with short buckets).
    Every,
    /// The caller weighs the series only over ranges of whole UTC days, so the
    /// whole days of the range with up-to-date rollups come as [`HeldSum`]s plus
    /// each day's first and last sample.
    WholeDaysRolledUp,
}

/// Samples of gauge `metrics` per tenant and series, taken in `[from, to)`:
/// every sample, or whole days from their rollups (see [`GaugeSamples`]).
pub async fn gauge_series(
    session: &LakeSession,
    filter: &UsageFilter,
    metrics: &[String],
    from: i64,
    to: i64,
    samples: GaugeSamples,
) -> Result<BTreeMap<String, Vec<GaugeSeries>>, QueryError> {
    let mut index = SeriesIndex::default();
    if !metrics.is_empty() {
        let grain = (samples == GaugeSamples::WholeDaysRolledUp).then_some(MICROS_PER_DAY);
        let split = split_usage(session, filter, from, to, grain, RollupRows::Hourly).await?;
        add_raw_samples(&mut index, split.raw, metrics).await?;
        if let Some(rollups) = split.rollups {
            add_rolled_up_days(&mut index, rollups, metrics).await?;
        }
    }
    Ok(index.by_tenant())
}

/// One gauge series while it is gathered.
struct Series {
    tenant: String,
    metric: String,
    resource: Option<String>,
    samples: Vec<GaugeSample>,
    held: Vec<HeldSum>,
}

/// Gauge series keyed by "tenant\0metric\0resource", looked up through one
/// reused key buffer so that a row allocates nothing unless it starts a series.
#[derive(Default)]
struct SeriesIndex {
    series: HashMap<String, Series>,
    key: String,
}

impl SeriesIndex {
    /// The series of `(tenant, metric, resource)`, started if new.
    fn series_of(&mut self, tenant: &str, metric: &str, resource: Option<&str>) -> &mut Series {
        self.key.clear();
        for part in [tenant, metric, resource.unwrap_or("\u{1}")] {
            self.key.push_str(part);
            self.key.push('\0');
        }
        if !self.series.contains_key(self.key.as_str()) {
            self.series.insert(
                self.key.clone(),
                Series {
                    tenant: tenant.to_string(),
                    metric: metric.to_string(),
                    resource: resource.map(str::to_string),
                    samples: Vec::new(),
                    held: Vec::new(),
                },
            );
        }
        self.series
            .get_mut(self.key.as_str())
            .expect("inserted above")
    }

    /// The series per tenant, sorted by metric then resource.
    fn by_tenant(self) -> BTreeMap<String, Vec<GaugeSeries>> {
        let mut by_tenant: BTreeMap<String, Vec<GaugeSeries>> = BTreeMap::new();
        for found in self.series.into_values() {
            by_tenant
                .entry(found.tenant)
                .or_default()
                .push(GaugeSeries {
                    metric: found.metric,
                    resource: found.resource,
                    samples: found.samples,
                    held: found.held,
                });
        }
        for list in by_tenant.values_mut() {
            list.sort_by(|a, b| (&a.metric, &a.resource).cmp(&(&b.metric, &b.resource)));
        }
        by_tenant
    }
}

/// Adds every raw sample of gauge `metrics` in `raw` to its series.
async fn add_raw_samples(
    index: &mut SeriesIndex,
    raw: DataFrame,
    metrics: &[String],
) -> Result<(), QueryError> {
    let frame = raw
        .filter(metric_in(metrics))
        .and_then(|f| f.select_columns(&["tenant_id", "metric", "resource", "ts", "value"]))?;
    for batch in collect(frame).await? {
        let [tenants, names, resources] = leading_strings::<3>(&batch)?;
        let (times, values) = (
            typed(&batch, 3, &utc_micros())?,
            typed(&batch, 4, &value_type())?,
        );
        let times = times.as_primitive::<TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            if tenants.is_null(row) || names.is_null(row) {
                continue;
            }
            let resource = resources.is_valid(row).then(|| resources.value(row));
            index
                .series_of(tenants.value(row), names.value(row), resource)
                .samples
                .push(GaugeSample {
                    ts_micros: times.value(row),
                    value: decimal_at(&values, row),
                });
        }
    }
    Ok(())
}

/// Adds the gauge rollup rows of `metrics` in `rollups`, a day each: its last
/// sample (how long it holds depends on the next day), a zero-valued marker at
/// its first sample (where the previous day's last sample stops) and the
/// weighted sum of the rest.
async fn add_rolled_up_days(
    index: &mut SeriesIndex,
    rollups: DataFrame,
    metrics: &[String],
) -> Result<(), QueryError> {
    let frame = rollups
        .filter(col("gauge").and(metric_in(metrics)))
        .and_then(|f| {
            f.select_columns(&[
                "tenant_id",
                "metric",
                "resource",
                "start",
                "events",
                "value_sum",
                "first_ts",
                "last_ts",
                "last_value",
            ])
        })?;
    for batch in collect(frame).await? {
        let [tenants, names, resources] = leading_strings::<3>(&batch)?;
        let starts = typed(&batch, 3, &utc_micros())?;
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        let samples = batch.column(4).as_primitive::<Int64Type>();
        let weighted = typed(&batch, 5, &value_type())?;
        let (firsts, lasts) = (
            typed(&batch, 6, &utc_micros())?,
            typed(&batch, 7, &utc_micros())?,
        );
        let (firsts, lasts) = (
            firsts.as_primitive::<TimestampMicrosecondType>(),
            lasts.as_primitive::<TimestampMicrosecondType>(),
        );
        let last_values = typed(&batch, 8, &value_type())?;
        for row in 0..batch.num_rows() {
            let resource = resources.is_valid(row).then(|| resources.value(row));
            let found = index.series_of(tenants.value(row), names.value(row), resource);
            if samples.value(row) > 1 {
                found.samples.push(GaugeSample {
                    ts_micros: firsts.value(row),
                    value: BigDecimal::zero(),
                });
            }
            found.samples.push(GaugeSample {
                ts_micros: lasts.value(row),
                value: decimal_at(&last_values, row),
            });
            found.held.push(HeldSum {
                from: starts.value(row),
                to: starts.value(row) + MICROS_PER_DAY,
                weighted: decimal_at(&weighted, row),
            });
        }
    }
    Ok(())
}

/// Usage of counter `metrics` per metric, tenant and bucket of `bucket_micros`, on
/// the grid that starts at `from`, over `[from, to)`; one scan for all metrics.
pub async fn bucket_usage(
    session: &LakeSession,
    filter: &UsageFilter,
    metrics: &[String],
    from: i64,
    to: i64,
    bucket_micros: i64,
) -> Result<BTreeMap<String, Vec<BucketUsage>>, QueryError> {
    let mut by_metric: BTreeMap<String, Vec<BucketUsage>> = BTreeMap::new();
    if metrics.is_empty() {
        return Ok(by_metric);
    }
    let stride = lit(ScalarValue::new_interval_mdn(
        0,
        0,
        bucket_micros.saturating_mul(1_000),
    ));
    // Hourly rollups fall into whole buckets only on an hour-aligned grid.
    let hourly_grid = bucket_micros % MICROS_PER_HOUR == 0 && from.rem_euclid(MICROS_PER_HOUR) == 0;
    let grain = hourly_grid.then_some(MICROS_PER_HOUR);
    let frame = split_usage(session, filter, from, to, grain, RollupRows::Hourly)
        .await?
        .union_hourly(
            Some(metrics),
            vec![
                utf8("metric"),
                utf8("tenant_id"),
                col("ts").alias("at"),
                col("value").alias("amount"),
            ],
            vec![
                utf8("metric"),
                utf8("tenant_id"),
                col("start").alias("at"),
                col("value_sum").alias("amount"),
            ],
        )?
        .aggregate(
            vec![
                col("metric"),
                col("tenant_id"),
                date_bin(stride, col("at"), ts_lit(from)).alias("bucket_start"),
            ],
            vec![sum(col("amount")).alias("usage")],
        )
        .map_err(QueryError::from)?;
    for batch in collect(frame).await? {
        let (names, tenants, starts, sums) = (
            typed(&batch, 0, &DataType::Utf8)?,
            typed(&batch, 1, &DataType::Utf8)?,
            typed(&batch, 2, &utc_micros())?,
            typed(&batch, 3, &value_type())?,
        );
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            let (Some(metric), Some(tenant_id)) =
                (string_at(&names, row), string_at(&tenants, row))
            else {
                continue;
            };
            by_metric.entry(metric).or_default().push(BucketUsage {
                tenant_id,
                bucket_start: starts.value(row),
                usage: decimal_at(&sums, row),
            });
        }
    }
    for rows in by_metric.values_mut() {
        rows.sort_by(|a, b| (&a.tenant_id, a.bucket_start).cmp(&(&b.tenant_id, b.bucket_start)));
    }
    Ok(by_metric)
}

/// A tenant's accepted events in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// How many.
    pub events: u64,
    /// The latest event time.
    pub last_event_micros: i64,
}

/// Accepted events per tenant in `[from, to)`: count and latest `ts`.
pub async fn activity(
    session: &LakeSession,
    filter: &UsageFilter,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Activity>, QueryError> {
    let frame = split_hourly(session, filter, from, to)
        .await?
        .union_hourly(
            None,
            vec![
                utf8("tenant_id"),
                lit(1i64).alias("events"),
                col("ts").alias("last"),
            ],
            vec![
                utf8("tenant_id"),
                col("events"),
                col("last_ts").alias("last"),
            ],
        )?
        .aggregate(
            vec![col("tenant_id")],
            vec![
                sum(col("events")).alias("events"),
                max(col("last")).alias("last"),
            ],
        )
        .map_err(QueryError::from)?;
    let mut by_tenant = BTreeMap::new();
    for batch in collect(frame).await? {
        let last = typed(&batch, 2, &utc_micros())?;
        let last = last.as_primitive::<TimestampMicrosecondType>();
        for (row, tenant, events) in tenant_counts(&batch)? {
            let last_event_micros = last.value(row);
            by_tenant.insert(
                tenant,
                Activity {
                    events,
                    last_event_micros,
                },
            );
        }
    }
    Ok(by_tenant)
}

/// The times of the accepted events in `[from, to)` per tenant, ascending:
/// the events themselves, never their rollups (which keep no times but the
/// first and last of an hour).
pub async fn event_times(
    session: &LakeSession,
    filter: &UsageFilter,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Vec<i64>>, QueryError> {
    let frame = split_usage(session, filter, from, to, None, RollupRows::Hourly)
        .await?
        .raw
        .select(vec![utf8("tenant_id"), col("ts")])
        .map_err(QueryError::from)?;
    let mut by_tenant: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for batch in collect(frame).await? {
        let tenants = typed(&batch, 0, &DataType::Utf8)?;
        let times = typed(&batch, 1, &utc_micros())?;
        let times = times.as_primitive::<TimestampMicrosecondType>();
        for row in 0..batch.num_rows() {
            if let Some(tenant) = string_at(&tenants, row) {
                by_tenant.entry(tenant).or_default().push(times.value(row));
            }
        }
    }
    for times in by_tenant.values_mut() {
        times.sort_unstable();
    }
    Ok(by_tenant)
}

/// The rows of a `tenant_id, count, …` aggregate: (row, tenant, count), skipping
/// rows without a tenant.
fn tenant_counts(batch: &RecordBatch) -> Result<Vec<(usize, String, u64)>, QueryError> {
    let tenants = typed(batch, 0, &DataType::Utf8)?;
    let counts =
        arrow::compute::cast(batch.column(1), &DataType::Int64).map_err(QueryError::from)?;
    let counts = counts.as_primitive::<Int64Type>();
    Ok((0..batch.num_rows())
        .filter_map(|row| {
            string_at(&tenants, row)
                .map(|tenant| (row, tenant, u64::try_from(counts.value(row)).unwrap_or(0)))
        })
        .collect())
}

/// Rejected events per tenant (those whose tenant could be read) rejected in
/// `[from, to)`. Needs an all-tenant session.
pub async fn rejected_counts(
    session: &LakeSession,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, u64>, QueryError> {
    let first_day = date_of_micros(from).unwrap_or(NaiveDate::MIN);
    let last_day = date_of_micros(to.saturating_sub(1)).unwrap_or(NaiveDate::MAX);
    let frame = session
        .rejected_events()
        .await?
        .filter(
            col("day")
                .gt_eq(day_lit(first_day))
                .and(col("day").lt_eq(day_lit(last_day)))
                .and(col("rejected_at").gt_eq(ts_lit(from)))
                .and(col("rejected_at").lt(ts_lit(to)))
                .and(col("tenant_id").is_not_null()),
        )
        .and_then(|f| f.aggregate(vec![col("tenant_id")], vec![count(lit(1)).alias("n")]))
        .map_err(QueryError::from)?;
    let mut by_tenant = BTreeMap::new();
    for batch in collect(frame).await? {
        for (_, tenant, count) in tenant_counts(&batch)? {
            by_tenant.insert(tenant, count);
        }
    }
    Ok(by_tenant)
}

/// The start of the grid bucket of width `bucket` (aligned to the Unix epoch)
/// at or after `micros`.
pub fn ceil_to_grid(micros: i64, bucket: i64) -> i64 {
    let floor = micros.div_euclid(bucket) * bucket;
    if floor == micros {
        floor
    } else {
        floor + bucket
    }
}
