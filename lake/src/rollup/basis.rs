//! The basis of a partition's rollups: a hash of what its rows were computed
//! from (the partition's active files, those neighbours that may hold an earlier
//! copy of one of its events, the dedup window and the catalog's gauge holds).
//! A rollup row is used only while its partition's basis is unchanged.

use std::collections::BTreeMap;

use allot_schemas::config::{DEFAULT_GAUGE_HOLD, MetricCatalog, MetricKind};
use allot_schemas::layout::TenantDay;

use crate::dedup::{DedupWindow, Neighbourhoods};
use crate::snapshot::TableFiles;

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

/// What in the catalog the rollups depend on: the gauge metrics and their holds.
pub fn catalog_fingerprint(catalog: &MetricCatalog) -> u64 {
    let mut hash = Fnv::new();
    hash.write(b"allot-usage-hourly-1");
    for (name, spec) in catalog.iter() {
        if spec.kind == MetricKind::Gauge {
            hash.write(name.as_bytes());
            hash.write(&gauge_hold_micros(spec.hold).to_le_bytes());
        }
    }
    hash.0
}

/// A gauge's hold in microseconds (the default when the catalog names none).
pub fn gauge_hold_micros(hold: Option<std::time::Duration>) -> i64 {
    i64::try_from(hold.unwrap_or(DEFAULT_GAUGE_HOLD).as_micros()).unwrap_or(i64::MAX)
}

/// The basis of every partition of `usage`: the catalog, the dedup window, the
/// partition's active files and those of its neighbours that may hold an
/// earlier copy of one of its events (see [`Neighbourhoods`]). Files ingested
/// after all of a partition's rows do not change its basis: they cannot change
/// which of its rows count.
pub fn partition_bases(
    usage: &TableFiles,
    fingerprint: u64,
    window: DedupWindow,
) -> BTreeMap<TenantDay, i64> {
    let near = Neighbourhoods::of(&usage.files, window, |_, _| true);
    let mut hashes: BTreeMap<TenantDay, Fnv> = BTreeMap::new();
    let start = || {
        let mut hash = Fnv::new();
        hash.write(&fingerprint.to_le_bytes());
        hash.write(&window.micros().to_le_bytes());
        hash
    };
    for file in &near.alone {
        let Some(tenant) = &file.tenant_id else {
            continue;
        };
        let mut hash = start();
        hash.write(file.path.as_bytes());
        hashes.insert(TenantDay::new(tenant, file.day), hash);
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
