//! The basis of a partition's rollups: a hash of what its rows were computed
//! from (the partition's active files, those neighbours that may hold an earlier
//! copy of one of its events, the dedup window and the catalog's gauge holds).
//! A rollup row is used only while its partition's basis is unchanged.

use std::collections::BTreeMap;

use allot_schemas::config::{DEFAULT_GAUGE_HOLD, MetricCatalog, MetricKind};
use allot_schemas::layout::TenantDay;

use crate::dedup::{DedupWindow, Neighbourhoods};
use crate::snapshot::LakeFile;

/// FNV-1a, 64 bits: a hash that is the same in every build and on every machine.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes.iter().chain([&0xff]) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// What in the catalog the rollups depend on: the gauge metrics and their
/// holds, the meter metrics (`max`, `unique_count`, `latest`) with their
/// kinds and counted fields, and the matches of the counters whose rates
/// match on dimensions. A catalog with none of these changed keeps the
/// rollups it had, including those written before meters and dimensional
/// rates existed.
pub fn catalog_fingerprint(catalog: &MetricCatalog) -> u64 {
    let mut hash = Fnv::new();
    hash.write(b"allot-usage-hourly-1");
    for (name, spec) in catalog.iter() {
        if spec.kind == MetricKind::Gauge {
            hash.write(name.as_bytes());
            hash.write(&gauge_hold_micros(spec.hold).to_le_bytes());
        }
    }
    for (name, spec) in catalog.iter() {
        if spec.kind.is_meter() {
            hash.write(b"meter");
            hash.write(name.as_bytes());
            hash.write(spec.kind.as_str().as_bytes());
            if let Some(distinct) = &spec.distinct {
                hash.write(distinct.field.to_string().as_bytes());
                hash.write(&distinct.max_distinct.to_le_bytes());
            }
        }
    }
    for (name, classes) in catalog.dimensional_counters() {
        hash.write(b"classes");
        hash.write(name.as_bytes());
        for rate_match in classes.matches() {
            hash.write(rate_match.to_string().as_bytes());
        }
    }
    hash.0
}

/// A gauge's hold in microseconds (the default when the catalog names none).
pub fn gauge_hold_micros(hold: Option<std::time::Duration>) -> i64 {
    i64::try_from(hold.unwrap_or(DEFAULT_GAUGE_HOLD).as_micros()).unwrap_or(i64::MAX)
}

/// The basis of every partition among `files` (the active `usage_events` files,
/// ordered by partition then path): the catalog, the dedup window, every one of
/// the partition's active files, and those of its neighbours that may hold an
/// earlier copy of one of its events (see [`Neighbourhoods`]). Files of other
/// partitions ingested after all of a partition's rows do not change its basis:
/// they cannot change which of its rows count. Any file added to or removed
/// from the partition itself does.
pub fn partition_bases(
    files: &[LakeFile],
    fingerprint: u64,
    window: DedupWindow,
) -> BTreeMap<TenantDay, i64> {
    partition_bases_where(files, fingerprint, window, |_, _| true)
}

/// The basis of the partitions among `files` that `target` selects: each the
/// same as [`partition_bases`] gives it (a basis depends on its partition's
/// neighbours, never on which other partitions are asked for).
pub fn partition_bases_where(
    files: &[LakeFile],
    fingerprint: u64,
    window: DedupWindow,
    target: impl Fn(&str, chrono::NaiveDate) -> bool,
) -> BTreeMap<TenantDay, i64> {
    let near = Neighbourhoods::of(files, window, target);
    let mut hashes: BTreeMap<TenantDay, Fnv> = BTreeMap::new();
    let start = || {
        let mut hash = Fnv::new();
        hash.write(&fingerprint.to_le_bytes());
        hash.write(&window.micros().to_le_bytes());
        hash
    };
    // A partition read as it is may have several files (each checked against
    // the others): its basis covers every one of them, in the sorted order of
    // `usage.files`, so any file added to or removed from it changes the basis.
    for file in &near.alone {
        let Some(tenant) = &file.tenant_id else {
            continue;
        };
        hashes
            .entry(TenantDay::new(tenant, file.day))
            .or_insert_with(start)
            .write(file.path.as_bytes());
    }
    for (key, paths) in &near.neighbours {
        let mut hash = start();
        for path in paths {
            hash.write(path.as_bytes());
        }
        hashes.insert(key.clone(), hash);
    }
    hashes
        .into_iter()
        .map(|(key, hash)| (key, hash.0 as i64))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use allot_schemas::layout::{DedupTags, RollupRows};
    use chrono::NaiveDate;

    /// A file of tenant `a` on 2026-10-20, added at `version` after being checked
    /// against the table at `checked_at`, its rows ingested over `ingested`.
    fn file(path: &str, ingested: (i64, i64), version: u64, checked_at: u64) -> LakeFile {
        LakeFile {
            path: path.to_string(),
            size: 1,
            tenant_id: Some("a".to_string()),
            day: NaiveDate::from_ymd_opt(2026, 10, 20).unwrap(),
            ingested,
            dedup: DedupTags {
                version: Some(version),
                checked_at: Some(checked_at),
                ingested: None,
            },
            rows: RollupRows::Any,
        }
    }

    fn basis(files: &[LakeFile]) -> i64 {
        let bases = partition_bases(files, 1, DedupWindow::default());
        assert_eq!(bases.len(), 1, "{bases:?}");
        *bases.values().next().unwrap()
    }

    /// A compacted file and a late file checked against it are both read as they
    /// are; the partition's basis must change whichever of the two paths sorts
    /// first, or reports would keep using rollups that miss the late file.
    #[test]
    fn every_file_of_a_partition_read_as_it_is_is_in_its_basis() {
        let compacted = file("day/part-b", (10, 20), 4, 3);
        let before = basis(std::slice::from_ref(&compacted));
        for late_path in ["day/part-a", "day/part-c"] {
            let late = file(late_path, (30, 30), 5, 4);
            let mut files = vec![compacted.clone(), late.clone()];
            files.sort_by(|x, y| x.path.cmp(&y.path));
            let near = Neighbourhoods::of(&files, DedupWindow::default(), |_, _| true);
            assert_eq!(near.alone.len(), 2, "both files are read as they are");
            let after = basis(&files);
            assert_ne!(after, before, "late file {late_path}");
            assert_ne!(after, basis(std::slice::from_ref(&late)));
        }
    }
}
