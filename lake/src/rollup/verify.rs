//! Checking the rollups against the raw events (`allot verify --rollups`).
//!
//! The rule every report relies on: a partition's rollup rows are used only
//! while their basis equals the partition's current basis (see
//! [`super::basis`]), and rows used that way are exactly what the partition's
//! deduplicated events give. [`verify_rollups`] recomputes a sample of the
//! partitions whose rollups are current from their raw events and compares the
//! rows, so a broken basis or a stale row shows as a named partition rather than
//! as a wrong invoice.

use std::collections::{BTreeMap, BTreeSet};

use allot_schemas::config::MetricCatalog;
use allot_schemas::layout::{LakeLocation, RollupRows, TenantDay};
use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::dedup::DedupWindow;
use crate::error::LakeError;
use crate::rollup::rollup_rows;
use crate::session::{LakeSession, Scope, SessionLimits};
use crate::snapshot::LakeSnapshot;

/// What [`verify_rollups`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RollupCheck {
    /// Partitions whose rollups are current (and so used by reports).
    pub current: u64,
    /// Of those, the partitions recomputed and compared.
    pub checked: u64,
    /// The first partitions whose stored rows differ from their raw events,
    /// each with its first differing row (at most ten).
    pub differences: Vec<(TenantDay, String)>,
}

/// Recomputes up to `sample` partitions (all when `sample` is 0) of those whose
/// rollups are current, spread evenly over them, and compares their stored rows
/// with the rows of their raw events.
pub async fn verify_rollups(
    location: &LakeLocation,
    catalog: &MetricCatalog,
    window: DedupWindow,
    sample: usize,
) -> Result<RollupCheck, LakeError> {
    let snapshot = LakeSnapshot::load(location).await?;
    let limits = SessionLimits {
        dedup_window: window,
        ..SessionLimits::default()
    };
    let mut session = LakeSession::new(&snapshot, &Scope::AllTenants, &limits)?;
    session.attach_rollups(&snapshot.hourly, catalog)?;
    let current = session.current_rollups().await?;
    let step = match sample {
        0 => 1,
        n => current.len().div_ceil(n).max(1),
    };
    let chosen: BTreeMap<TenantDay, i64> = current
        .iter()
        .step_by(step)
        .map(|(key, basis)| (key.clone(), *basis))
        .collect();
    let mut check = RollupCheck {
        current: current.len() as u64,
        checked: chosen.len() as u64,
        differences: Vec::new(),
    };
    if chosen.is_empty() {
        return Ok(check);
    }
    let stored = match session.rollup_rows(&chosen, RollupRows::Any)? {
        Some(frame) => frame.collect().await.map_err(LakeError::from)?,
        None => Vec::new(),
    };
    let recomputed = rollup_rows(&session, catalog, &chosen).await?;
    let stored = rows_by_partition(&stored)?;
    let recomputed = rows_by_partition(std::slice::from_ref(&recomputed))?;
    for key in chosen.keys() {
        let empty = BTreeSet::new();
        let (a, b) = (
            stored.get(key).unwrap_or(&empty),
            recomputed.get(key).unwrap_or(&empty),
        );
        if a != b {
            let row = a
                .symmetric_difference(b)
                .next()
                .map(|row| {
                    let side = if a.contains(row) {
                        "stored only"
                    } else {
                        "raw only"
                    };
                    format!("{side}: {row}")
                })
                .unwrap_or_default();
            check.differences.push((key.clone(), row));
            if check.differences.len() == 10 {
                break;
            }
        }
    }
    Ok(check)
}

/// Every row of `batches` as text (columns joined by `|`), per partition (the
/// first two columns are the tenant and the day).
fn rows_by_partition(
    batches: &[RecordBatch],
) -> Result<BTreeMap<TenantDay, BTreeSet<String>>, LakeError> {
    let options = FormatOptions::default();
    let mut rows: BTreeMap<TenantDay, BTreeSet<String>> = BTreeMap::new();
    for batch in batches {
        let schema = batch.schema();
        let tenant = schema.index_of("tenant_id").map_err(LakeError::from)?;
        let day = schema.index_of("day").map_err(LakeError::from)?;
        let formatters = batch
            .columns()
            .iter()
            .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()
            .map_err(LakeError::from)?;
        for row in 0..batch.num_rows() {
            let text: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            let date = text[day].parse().map_err(|_| LakeError::Unreadable {
                table: "usage_hourly",
                message: format!("a rollup row's day {:?}", text[day]),
            })?;
            rows.entry(TenantDay::new(&text[tenant], date))
                .or_default()
                .insert(text.join("|"));
        }
    }
    Ok(rows)
}
