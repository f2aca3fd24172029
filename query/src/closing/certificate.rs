//! The completeness certificate of a closed month: per tenant-day, the
//! events, their sums, the digest of their sorted lines and the sources they
//! came from ([`digest_lines`] is the recipe).

use std::collections::BTreeMap;

use allot_lake::session::{LakeSession, Scope, SessionLimits};
use allot_lake::snapshot::{LakeSnapshot, partition_date};
use allot_schemas::layout::Provenance;
use arrow::array::{ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Date32Type, Decimal128Type, TimestampMicrosecondType};
use arrow_schema::{DataType, TimeUnit};
use bigdecimal::num_bigint::BigInt;
use bigdecimal::{BigDecimal, Zero};
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::QueryError;
use crate::period::Period;
use crate::rounding::format_fixed;

/// Kafka coverage of one topic-partition in a tenant-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaCover {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Lowest offset of an event of the day.
    pub low: i64,
    /// Highest offset.
    pub high: i64,
    /// Number of events from this partition.
    pub count: u64,
}

/// File coverage of one backfill file in a tenant-day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCover {
    /// The file name as given to `allot ingest --from-file`.
    pub name: String,
    /// Number of its lines that became events of the day.
    pub lines: u64,
}

/// The certificate of one tenant-day; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateDay {
    /// The tenant.
    pub tenant_id: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Distinct events.
    pub events: u64,
    /// Raw sum per metric, 9 decimals.
    pub sums: BTreeMap<String, String>,
    /// SHA-256 (hex) of the sorted lines.
    pub digest: String,
    /// Kafka sources.
    pub kafka: Vec<KafkaCover>,
    /// File sources.
    pub files: Vec<FileCover>,
}

/// The columns of a certificate as CSV.
pub const CERTIFICATE_COLUMNS: [&str; 6] =
    ["tenant_id", "day", "events", "digest", "sums", "sources"];

impl CertificateDay {
    /// The day as CSV fields in [`CERTIFICATE_COLUMNS`] order: sums as
    /// `metric=sum` joined by `;`, sources as `kafka:topic/partition@low-high#count`
    /// and `file:name#lines` joined by `;`.
    pub fn csv_record(&self) -> Vec<String> {
        let sums: Vec<String> = self.sums.iter().map(|(m, s)| format!("{m}={s}")).collect();
        let sources: Vec<String> = self
            .kafka
            .iter()
            .map(|k| {
                format!(
                    "kafka:{}/{}@{}-{}#{}",
                    k.topic, k.partition, k.low, k.high, k.count
                )
            })
            .chain(
                self.files
                    .iter()
                    .map(|f| format!("file:{}#{}", f.name, f.lines)),
            )
            .collect();
        vec![
            self.tenant_id.clone(),
            self.day.clone(),
            self.events.to_string(),
            self.digest.clone(),
            sums.join(";"),
            sources.join(";"),
        ]
    }
}

/// The SHA-256 (lower-case hex) of `lines` sorted by their UTF-8 bytes, each
/// followed by a line feed: the certificate's digest of a tenant-day.
///
/// ```
/// use allot_query::closing::digest_lines;
/// let lines = vec!["b|2|m|1.000000000".to_string(), "a|1|m|2.500000000".to_string()];
/// // sha256("a|1|m|2.500000000\nb|2|m|1.000000000\n")
/// assert_eq!(digest_lines(lines).len(), 64);
/// ```
pub fn digest_lines(mut lines: Vec<String>) -> String {
    lines.sort_unstable();
    let mut hasher = Sha256::new();
    for line in &lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hex::encode(hasher.finalize())
}

/// The SHA-256 (hex) of a text.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[derive(Default)]
struct DayAccumulator {
    lines: Vec<String>,
    sums: BTreeMap<String, BigDecimal>,
    kafka: BTreeMap<(String, i32), (i64, i64, u64)>,
    files: BTreeMap<String, u64>,
}

fn cast(batch: &RecordBatch, i: usize, to: &DataType) -> Result<ArrayRef, QueryError> {
    arrow::compute::cast(batch.column(i), to).map_err(QueryError::from)
}

/// Counts a `source` value ([`Provenance`]) towards the day's coverage.
fn add_source(day: &mut DayAccumulator, source: &str) {
    match Provenance::parse(source) {
        Ok(Provenance::Kafka {
            topic,
            partition,
            offset,
        }) => {
            let entry = day
                .kafka
                .entry((topic.to_string(), partition))
                .or_insert((offset, offset, 0));
            entry.0 = entry.0.min(offset);
            entry.1 = entry.1.max(offset);
            entry.2 += 1;
        }
        Ok(Provenance::File { name, .. }) => {
            *day.files.entry(name.to_string()).or_default() += 1;
        }
        Err(_) => {}
    }
}

/// The certificate of every tenant-day of `period` in `snapshot`, ordered by
/// tenant and day.
pub async fn certificate(
    snapshot: &LakeSnapshot,
    period: Period,
) -> Result<Vec<CertificateDay>, QueryError> {
    let session = LakeSession::new(snapshot, &Scope::AllTenants, &SessionLimits::default())?;
    let ts = |micros| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(micros),
            Some("UTC".into()),
        ))
    };
    let frame = session
        .usage_events()
        .await?
        .filter(
            col("ts")
                .gt_eq(ts(period.start_micros()))
                .and(col("ts").lt(ts(period.end_micros()))),
        )
        .and_then(|f| {
            f.select(vec![
                col("tenant_id"),
                col("day"),
                col("event_id"),
                col("ts"),
                col("metric"),
                col("value"),
                col("source"),
            ])
        })
        .map_err(QueryError::from)?;
    let mut stream = frame.execute_stream().await.map_err(QueryError::from)?;
    let mut days: BTreeMap<(String, i32), DayAccumulator> = BTreeMap::new();
    let decimal = DataType::Decimal128(38, 9);
    let micros = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(QueryError::from)?;
        let tenants = cast(&batch, 0, &DataType::Utf8)?;
        let day_col = cast(&batch, 1, &DataType::Date32)?;
        let ids = cast(&batch, 2, &DataType::Utf8)?;
        let times = cast(&batch, 3, &micros)?;
        let metrics = cast(&batch, 4, &DataType::Utf8)?;
        let values = cast(&batch, 5, &decimal)?;
        let sources = cast(&batch, 6, &DataType::Utf8)?;
        let (tenants, ids, metrics, sources) = (
            tenants.as_string::<i32>(),
            ids.as_string::<i32>(),
            metrics.as_string::<i32>(),
            sources.as_string::<i32>(),
        );
        let day_col = day_col.as_primitive::<Date32Type>();
        let times = times.as_primitive::<TimestampMicrosecondType>();
        let values = values.as_primitive::<Decimal128Type>();
        for row in 0..batch.num_rows() {
            let value = BigDecimal::new(BigInt::from(values.value(row)), 9);
            let metric = metrics.value(row);
            let day = days
                .entry((tenants.value(row).to_string(), day_col.value(row)))
                .or_default();
            day.lines.push(format!(
                "{}|{}|{}|{}",
                ids.value(row),
                times.value(row),
                metric,
                format_fixed(&value, 9)
            ));
            *day.sums
                .entry(metric.to_string())
                .or_insert_with(BigDecimal::zero) += value;
            add_source(day, sources.value(row));
        }
    }
    let mut certificate = Vec::with_capacity(days.len());
    for ((tenant_id, day), acc) in days {
        certificate.push(CertificateDay {
            tenant_id,
            day: partition_date(day)?.format("%Y-%m-%d").to_string(),
            events: acc.lines.len() as u64,
            sums: acc
                .sums
                .iter()
                .map(|(m, s)| (m.clone(), format_fixed(s, 9)))
                .collect(),
            digest: digest_lines(acc.lines),
            kafka: acc
                .kafka
                .into_iter()
                .map(|((topic, partition), (low, high, count))| KafkaCover {
                    topic,
                    partition,
                    low,
                    high,
                    count,
                })
                .collect(),
            files: acc
                .files
                .into_iter()
                .map(|(name, lines)| FileCover { name, lines })
                .collect(),
        });
    }
    Ok(certificate)
}
