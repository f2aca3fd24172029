//! Which tenant-days a run rewrites: the files of each partition, small
//! and large, and the rows the judgement beat.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use allot_schemas::layout::{DedupTags, LakeTable, TenantDay};
use allot_schemas::time::is_supported_event_day;
use deltalake::DeltaTable;
use deltalake::kernel::Remove;

use super::judge::{Judged, RowKey, beaten_rows};
use super::{CompactOptions, parse_day};
use crate::error::LakeError;

/// The files of one tenant-day partition.
#[derive(Default)]
pub(super) struct PartitionFiles {
    /// Files under half the target size: merged.
    pub(super) small: Vec<Remove>,
    /// Larger files: kept, only their event ids are read (unless the partition
    /// holds rows the dedup window rejects: then they are rewritten too).
    pub(super) large: Vec<Remove>,
    /// The dedup tags of every file, by path.
    pub(super) tags: HashMap<String, DedupTags>,
}

impl PartitionFiles {
    /// The dedup tags of a file rewriting the small files: its rows were all in
    /// the table by the newest source's version; they were checked at `judged_at`
    /// when this run judged the partition, else as far as every source was; their
    /// `ingested_at` lies within the sources' bounds.
    pub(super) fn rewritten_tags(&self, judged_at: Option<u64>) -> DedupTags {
        let sources: Vec<DedupTags> = self
            .small
            .iter()
            .map(|r| self.tags.get(&r.path).copied().unwrap_or_default())
            .collect();
        let all = |get: fn(&DedupTags) -> Option<u64>| -> Option<Vec<u64>> {
            sources.iter().map(get).collect()
        };
        let ingested: Option<Vec<(i64, i64)>> = sources.iter().map(|t| t.ingested).collect();
        DedupTags {
            version: all(|t| t.version).and_then(|v| v.into_iter().max()),
            checked_at: judged_at.or_else(|| all(|t| t.checked_at)?.into_iter().min()),
            ingested: ingested.and_then(|bounds| {
                let min = bounds.iter().map(|b| b.0).min()?;
                let max = bounds.iter().map(|b| b.1).max()?;
                Some((min, max))
            }),
        }
    }
}

/// What a run rewrites, and the partitions it skips without trying.
pub(super) struct Planned {
    /// The tenant-days to rewrite, in partition order.
    pub(super) jobs: Vec<RewriteJob>,
    /// Partitions whose day is outside the supported range.
    pub(super) skipped: u64,
}

/// Judges the lake, lists the files of every partition and plans the rewrite of
/// those with enough small files or with beaten rows.
pub(super) async fn plan_rewrites(
    table: &mut DeltaTable,
    options: &CompactOptions,
) -> Result<Planned, LakeError> {
    let (target_file_bytes, min_files) = (options.target_file_bytes, options.min_files);
    let name = LakeTable::UsageEvents.dir_name();
    table.update_state().await.map_err(LakeError::table(name))?;
    let Judged {
        mut beaten,
        version: judged_version,
        current,
    } = beaten_rows(options).await?;
    let small_below = target_file_bytes / 2;
    let mut by_partition: BTreeMap<TenantDay, PartitionFiles> = BTreeMap::new();
    let mut unsupported: BTreeSet<TenantDay> = BTreeSet::new();
    for file in table
        .snapshot()
        .map_err(LakeError::table(name))?
        .log_data()
        .iter()
    {
        // Delta-rs offers a file's tags only through its Add action, which also
        // carries its partition values.
        #[allow(deprecated)]
        let add = file.add_action();
        let values = &add.partition_values;
        let (Some(Some(tenant)), Some(Some(day))) = (values.get("tenant_id"), values.get("day"))
        else {
            continue;
        };
        let Some(day) = parse_day(day) else {
            continue;
        };
        if !is_supported_event_day(day) {
            // Stored before ingest refused such a `ts`: the query engine cannot
            // hold its rows, and no reader sees them.
            unsupported.insert(TenantDay::new(tenant.clone(), day));
            continue;
        }
        let files = by_partition
            .entry(TenantDay::new(tenant.clone(), day))
            .or_default();
        files
            .tags
            .insert(add.path.clone(), DedupTags::read(add.tags.as_ref()));
        if u64::try_from(file.size()).unwrap_or(0) < small_below {
            files.small.push(file.remove_action(false));
        } else {
            files.large.push(file.remove_action(false));
        }
    }
    let mut jobs = Vec::new();
    for (partition, mut files) in by_partition {
        let rejected = beaten.remove(&partition).unwrap_or_default();
        if rejected.is_empty() && files.small.len() < min_files.max(2) {
            continue;
        }
        if !rejected.is_empty() {
            // Rejected rows may sit in large files: rewrite the whole partition.
            let large = std::mem::take(&mut files.large);
            files.small.extend(large);
        }
        // Every file listed here was in the table this run judged (listed first),
        // so a partition it judged is checked as of that version.
        let judged = !current.contains(&partition);
        let tags = files.rewritten_tags(judged_version.filter(|_| judged));
        jobs.push(RewriteJob {
            partition,
            files,
            rejected,
            tags,
        });
    }
    for partition in &unsupported {
        tracing::warn!(
            tenant_id = %partition.tenant_id,
            day = %partition.day,
            "cannot compact this tenant-day: its day is outside the supported range \
             (1970-01-01 to 2261-12-31); skipped"
        );
    }
    Ok(Planned {
        jobs,
        skipped: unsupported.len() as u64,
    })
}

/// One tenant-day to rewrite, with what its rewrite needs.
pub(super) struct RewriteJob {
    pub(super) partition: TenantDay,
    pub(super) files: PartitionFiles,
    pub(super) rejected: HashSet<RowKey>,
    pub(super) tags: DedupTags,
}
