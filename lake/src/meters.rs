//! Reading the meter kinds `max`, `unique_count` and `latest`
//! (docs/reference.md#other-meter-kinds) from events and from rollups.
//!
//! Both the hourly rollups and the reports fold a metric's events into
//! [`MeterSummary`]s per (tenant, metric, bucket) with one [`MeterFold`]: from
//! raw events ([`meter_event_columns`], [`MeterFold::add_events`]) and from
//! the rollup rows of `usage_hourly` ([`ROLLUP_METER_COLUMNS`],
//! [`MeterFold::add_rollups`]). A `unique_count` bucket with more distinct
//! values than its metric's `max_distinct` is refused as soon as it has them.

use std::collections::HashMap;

use allot_schemas::config::{CountedField, Dimension, MetricCatalog, MetricKind};
use allot_schemas::meter::{LastEvent, MeterSummary};
use allot_schemas::table_schema::distinct_values_type;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::functions_nested::expr_fn::{array_element, map_extract};
use datafusion::logical_expr::{Expr, cast, col, lit, when};
use datafusion::prelude::DataFrame;

use crate::columns::{decimal_at, typed, utc_micros, value_type};
use crate::error::LakeError;

/// The expression of an event's value of `dimension`.
pub fn dimension_value(dimension: &Dimension) -> Expr {
    match dimension {
        Dimension::Region => col("region"),
        Dimension::Service => col("service"),
        // `map_extract` rather than `get_field`: the engine's optimizer pushes
        // field accesses through the dedup union and mistypes its columns.
        Dimension::Label(label) => {
            array_element(map_extract(col("labels"), lit(label.as_str())), lit(1i64))
        }
    }
}

/// The expression of an event's value of the counted `field`.
pub fn counted_field_value(field: &CountedField) -> Expr {
    match field {
        CountedField::Resource => col("resource"),
        CountedField::Dimension(dimension) => dimension_value(dimension),
    }
}

/// The meter metrics of `catalog` (kinds `max`, `unique_count`, `latest`).
pub fn meter_metrics(catalog: &MetricCatalog) -> Vec<String> {
    catalog
        .iter()
        .filter(|(_, spec)| spec.kind.is_meter())
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The events of `events` of meter `metrics` (each a meter of `catalog`) as
/// the columns [`MeterFold::add_events`] reads: `tenant_id`, `metric`, `ts`,
/// `event_id`, `value` and `field_value`, the value of the counted field of
/// a `unique_count` metric (null for the others).
pub fn meter_event_columns(
    events: DataFrame,
    catalog: &MetricCatalog,
    metrics: &[String],
) -> Result<DataFrame, LakeError> {
    let counted: Vec<(&String, &CountedField)> = metrics
        .iter()
        .filter_map(|metric| {
            let distinct = catalog.get(metric)?.distinct.as_ref()?;
            Some((metric, &distinct.field))
        })
        .collect();
    let null = lit(datafusion::common::ScalarValue::Utf8(None));
    let field_value = match counted.split_first() {
        None => null,
        Some(((metric, field), rest)) => {
            let mut case = when(
                col("metric").eq(lit(metric.as_str())),
                cast(counted_field_value(field), DataType::Utf8),
            );
            for (metric, field) in rest {
                case = case.when(
                    col("metric").eq(lit(metric.as_str())),
                    cast(counted_field_value(field), DataType::Utf8),
                );
            }
            case.otherwise(null)?
        }
    };
    let utf8 = |name: &str| cast(col(name), DataType::Utf8).alias(name);
    Ok(events
        .filter(col("metric").in_list(metrics.iter().map(|m| lit(m.as_str())).collect(), false))?
        .select(vec![
            utf8("tenant_id"),
            utf8("metric"),
            col("ts"),
            utf8("event_id"),
            col("value"),
            field_value.alias("field_value"),
        ])?)
}

/// The `usage_hourly` columns of the meters, in the order
/// [`MeterFold::add_rollups`] reads them.
pub const ROLLUP_METER_COLUMNS: [&str; 8] = [
    "tenant_id",
    "metric",
    "start",
    "value_max",
    "last_ts",
    "last_event_id",
    "last_value",
    "distinct_values",
];

/// (tenant, metric, bucket start).
pub type MeterKey = (String, String, i64);

/// Meter summaries per (tenant, metric, bucket), buckets of `width`
/// microseconds on the grid through `origin`.
pub struct MeterFold<'a> {
    catalog: &'a MetricCatalog,
    origin: i64,
    width: i64,
    bounded: bool,
    /// The summaries gathered.
    pub summaries: HashMap<MeterKey, MeterSummary>,
}

impl<'a> MeterFold<'a> {
    /// An empty fold into buckets of `width` (above 0) through `origin`.
    pub fn new(catalog: &'a MetricCatalog, origin: i64, width: i64) -> MeterFold<'a> {
        MeterFold {
            catalog,
            origin,
            width: width.max(1),
            bounded: true,
            summaries: HashMap::new(),
        }
    }

    /// The same fold, keeping every distinct value however many there are
    /// (the rollups, which hold each hour's values and leave the refusal to
    /// the reports).
    pub fn unbounded(self) -> MeterFold<'a> {
        MeterFold {
            bounded: false,
            ..self
        }
    }

    fn bucket_of(&self, micros: i64) -> i64 {
        self.origin + (micros - self.origin).div_euclid(self.width) * self.width
    }

    /// The summary of `(tenant, metric)` at `micros`, and the metric's kind and
    /// distinct-value bound; `None` for a metric that is no meter of the catalog.
    fn summary_at(
        &mut self,
        tenant: &str,
        metric: &str,
        micros: i64,
    ) -> Option<(&mut MeterSummary, MetricKind, u64)> {
        let spec = self.catalog.get(metric)?;
        if !spec.kind.is_meter() {
            return None;
        }
        let bound = match &spec.distinct {
            Some(distinct) if self.bounded => distinct.max_distinct,
            _ => u64::MAX,
        };
        let key = (
            tenant.to_string(),
            metric.to_string(),
            self.bucket_of(micros),
        );
        Some((self.summaries.entry(key).or_default(), spec.kind, bound))
    }

    /// Adds a batch of [`meter_event_columns`].
    pub fn add_events(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        let [tenants, metrics, ids, fields] =
            [0, 1, 3, 5].map(|i| typed(batch, i, &DataType::Utf8));
        let (tenants, metrics, ids, fields) = (tenants?, metrics?, ids?, fields?);
        let (tenants, metrics, ids, fields) = (
            tenants.as_string::<i32>(),
            metrics.as_string::<i32>(),
            ids.as_string::<i32>(),
            fields.as_string::<i32>(),
        );
        let times = typed(batch, 2, &utc_micros())?;
        let times = times.as_primitive::<TimestampMicrosecondType>();
        let values = typed(batch, 4, &value_type())?;
        for row in 0..batch.num_rows() {
            if tenants.is_null(row) || metrics.is_null(row) {
                continue;
            }
            let (tenant, metric) = (tenants.value(row), metrics.value(row));
            let Some((summary, kind, bound)) = self.summary_at(tenant, metric, times.value(row))
            else {
                continue;
            };
            let field = fields.is_valid(row).then(|| fields.value(row));
            summary.add(
                kind,
                times.value(row),
                ids.value(row),
                &decimal_at(&values, row),
                field,
            );
            check(summary, bound, tenant, metric)?;
        }
        Ok(())
    }

    /// Adds a batch of `usage_hourly` rows in [`ROLLUP_METER_COLUMNS`].
    pub fn add_rollups(&mut self, batch: &RecordBatch) -> Result<(), LakeError> {
        let [tenants, metrics, ids] = [0, 1, 5].map(|i| typed(batch, i, &DataType::Utf8));
        let (tenants, metrics, ids) = (tenants?, metrics?, ids?);
        let (tenants, metrics, ids) = (
            tenants.as_string::<i32>(),
            metrics.as_string::<i32>(),
            ids.as_string::<i32>(),
        );
        let starts = typed(batch, 2, &utc_micros())?;
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        let last_times = typed(batch, 4, &utc_micros())?;
        let last_times = last_times.as_primitive::<TimestampMicrosecondType>();
        let (maxima, last_values) = (
            typed(batch, 3, &value_type())?,
            typed(batch, 6, &value_type())?,
        );
        let distinct = typed(batch, 7, &distinct_values_type())?;
        let distinct = distinct.as_list::<i32>();
        for row in 0..batch.num_rows() {
            if tenants.is_null(row) || metrics.is_null(row) {
                continue;
            }
            let (tenant, metric) = (tenants.value(row), metrics.value(row));
            let Some((summary, _, bound)) = self.summary_at(tenant, metric, starts.value(row))
            else {
                continue;
            };
            let mut hour = MeterSummary {
                max: maxima.is_valid(row).then(|| decimal_at(&maxima, row)),
                ..MeterSummary::default()
            };
            if ids.is_valid(row) && last_values.is_valid(row) {
                hour.last = Some(LastEvent {
                    ts_micros: last_times.value(row),
                    event_id: ids.value(row).to_string(),
                    value: decimal_at(&last_values, row),
                });
            }
            if distinct.is_valid(row) {
                let values = distinct.value(row);
                let values = values.as_string::<i32>();
                hour.distinct = values.iter().flatten().map(str::to_string).collect();
            }
            summary.merge(hour);
            check(summary, bound, tenant, metric)?;
        }
        Ok(())
    }
}

/// Refuses `summary` when it holds more distinct values than `bound`.
pub fn check(
    summary: &MeterSummary,
    bound: u64,
    tenant: &str,
    metric: &str,
) -> Result<(), LakeError> {
    summary
        .check_distinct(bound)
        .map_err(|too_many| LakeError::TooManyDistinct {
            tenant: tenant.to_string(),
            metric: metric.to_string(),
            max_distinct: too_many.max_distinct,
        })
}
