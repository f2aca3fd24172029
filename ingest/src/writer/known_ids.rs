//! What a writer knows of the event ids already in the lake: the ids of the
//! tenant-days it loaded within the dedup window, bounded in memory, and the
//! fingerprints of what it wrote itself.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use allot_lake::dedup::DedupWindow;
use allot_schemas::layout::TenantDay;
use allot_schemas::time::{days_since_epoch, epoch_day_of_micros};
use arrow::array::{AsArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::TimestampMicrosecondType;

use crate::partitions::partition_columns;

/// The `ts` of the copies of one event id a tenant has on the loaded days: one
/// nearly always, so it is kept inline.
pub(super) enum Copies {
    One(i64),
    Many(Vec<i64>),
}

impl Copies {
    pub(super) fn times(&self) -> &[i64] {
        match self {
            Copies::One(ts) => std::slice::from_ref(ts),
            Copies::Many(times) => times,
        }
    }

    pub(super) fn push(&mut self, ts: i64) {
        match self {
            Copies::One(first) => *self = Copies::Many(vec![*first, ts]),
            Copies::Many(times) => times.push(ts),
        }
    }
}

/// The copies a tenant has on the days loaded (or written lately).
#[derive(Default)]
pub(super) struct TenantIds {
    touched: u64,
    /// Days whose copies are all known, with the files they are known from.
    days: BTreeMap<i32, BTreeSet<String>>,
    ids: HashMap<Box<str>, Copies, ahash::RandomState>,
    copies: usize,
}

impl TenantIds {
    /// Removes one copy of `event_id` at `ts`; false when there is none.
    pub(super) fn forget(&mut self, event_id: &str, ts: i64) -> bool {
        let Some(copies) = self.ids.get_mut(event_id) else {
            return false;
        };
        match copies {
            Copies::One(only) if *only == ts => {
                self.ids.remove(event_id);
            }
            Copies::One(_) => return false,
            Copies::Many(times) => {
                let Some(at) = times.iter().rposition(|t| *t == ts) else {
                    return false;
                };
                times.remove(at);
                if let [one] = times.as_slice() {
                    *copies = Copies::One(*one);
                }
            }
        }
        self.copies -= 1;
        true
    }
}

/// Event ids known to be in the lake, for recently touched tenants.
pub(super) struct KnownEventIds {
    tenants: HashMap<String, TenantIds>,
    /// Σ copies over the tenants.
    total: usize,
    pub(super) window: DedupWindow,
    max_keys: usize,
    /// The copies left after the last pass over the cap: those on open days
    /// (which no pass can drop) and the last tenant's. The next pass waits
    /// until half the cap has been added on top, so that a backfill whose open
    /// days hold more than the cap does not rescan every tenant after each
    /// one it checks.
    left_after_pass: usize,
    tick: u64,
}

impl KnownEventIds {
    pub(super) fn new(max_keys: usize, window: DedupWindow) -> Self {
        KnownEventIds {
            tenants: HashMap::new(),
            total: 0,
            window,
            max_keys,
            left_after_pass: 0,
            tick: 0,
        }
    }

    /// Whether every copy of the tenant-day is known, its files being `current`.
    pub(super) fn knows_day(&self, key: &TenantDay, current: &[String]) -> bool {
        self.tenants
            .get(&key.tenant_id)
            .and_then(|t| t.days.get(&days_since_epoch(key.day)))
            .is_some_and(|known| {
                known.len() == current.len() && current.iter().all(|p| known.contains(p))
            })
    }

    /// Records a file written to a tenant-day whose copies are known (its rows
    /// were added when they were checked).
    pub(super) fn add_file(&mut self, key: &TenantDay, path: String) {
        if let Some(known) = self
            .tenants
            .get_mut(&key.tenant_id)
            .and_then(|t| t.days.get_mut(&days_since_epoch(key.day)))
        {
            known.insert(path);
        }
    }

    /// The known copies of a tenant, marked as touched by the current batch.
    pub(super) fn tenant_mut(&mut self, tenant: &str) -> KnownIds<'_> {
        let tick = self.tick;
        let ids = self.tenants.entry(tenant.to_string()).or_default();
        ids.touched = tick;
        KnownIds {
            ids,
            total: &mut self.total,
            window: self.window,
        }
    }

    /// Forgets the copies that checking `rows` recorded, once their batch turned
    /// out not to be committed.
    pub(super) fn forget(&mut self, rows: &RecordBatch) {
        let (tenants, _) = partition_columns(rows);
        let (ids, times) = event_columns(rows);
        for row in 0..rows.num_rows() {
            // A tenant dropped over the cap meanwhile has nothing left to forget.
            if let Some(tenant) = self.tenants.get_mut(tenants.value(row))
                && tenant.forget(ids.value(row), times.value(row))
            {
                self.total -= 1;
            }
        }
    }

    /// Ends the check of one tenant: over the cap, drops the least recently
    /// touched tenants until half the cap is free (the tenant just checked
    /// last). Of a tenant with `open` days (a backfill's rows not committed
    /// yet), only the copies on those days are kept, and all its days count as
    /// unknown, so they are read again when needed.
    pub(super) fn advance(&mut self, open: &HashMap<String, BTreeSet<i32>>) {
        self.tick += 1;
        if self.total <= self.max_keys.max(self.left_after_pass + self.max_keys / 2) {
            return;
        }
        let mut by_age: Vec<(u64, String, usize)> = self
            .tenants
            .iter()
            .map(|(tenant, t)| (t.touched, tenant.clone(), t.copies))
            .collect();
        by_age.sort();
        for (_, tenant, len) in by_age {
            if self.total <= self.max_keys / 2 {
                break;
            }
            match open.get(&tenant) {
                None => {
                    self.tenants.remove(&tenant);
                    self.total -= len;
                }
                Some(days) => {
                    let ids = self.tenants.get_mut(&tenant).expect("listed above");
                    ids.days.clear();
                    let mut held = KnownIds {
                        ids,
                        total: &mut self.total,
                        window: self.window,
                    };
                    held.retain_copies(|day| days.contains(&day));
                }
            }
        }
        self.left_after_pass = self.total;
    }
}

/// Most fingerprints a backfill keeps of the ids it wrote (8 bytes each, plus
/// the hash set's overhead); beyond it, the days it wrote are read back instead.
pub(super) const WRITTEN_FINGERPRINTS: usize = 8_000_000;

/// What a backfill wrote itself: the paths of its files and a 64-bit
/// fingerprint of each `(tenant_id, event_id)` in them. A tenant-day whose files
/// are all its own holds no copy of an id without its fingerprint, so it need
/// not be read back while none of the tenant's new ids matches one; a match
/// (a duplicate, or one chance in about 2^64 / n of two ids sharing a
/// fingerprint) reads the days as before, so the check stays exact.
#[derive(Default)]
pub(super) struct WrittenIds {
    pub(super) hasher: ahash::RandomState,
    fingerprints: HashSet<u64, ahash::RandomState>,
    paths: HashSet<String>,
    /// Set once the cap is reached: nothing is vouched for any more.
    full: bool,
}

impl WrittenIds {
    pub(super) fn fingerprint(&self, tenant: &str, event_id: &str) -> u64 {
        self.hasher.hash_one((tenant, event_id))
    }

    /// Whether one of `event_ids` of `tenant` may be among the ids written.
    pub(super) fn has_any<'a>(
        &self,
        tenant: &str,
        mut event_ids: impl Iterator<Item = &'a str>,
    ) -> bool {
        !self.fingerprints.is_empty()
            && event_ids.any(|id| self.fingerprints.contains(&self.fingerprint(tenant, id)))
    }

    /// Whether every one of `files` was written (and fingerprinted) here.
    pub(super) fn wrote_all(&self, files: &[String]) -> bool {
        !self.full && files.iter().all(|p| self.paths.contains(p))
    }

    /// Records the committed `files` and the [`fingerprint`](Self::fingerprint)s
    /// of the rows they hold.
    pub(super) fn record_fingerprints<'a>(
        &mut self,
        fingerprints: Vec<u64>,
        files: impl Iterator<Item = &'a str>,
    ) {
        if self.full {
            return;
        }
        if self.fingerprints.len() + fingerprints.len() > WRITTEN_FINGERPRINTS {
            *self = WrittenIds {
                full: true,
                ..WrittenIds::default()
            };
            return;
        }
        self.fingerprints.extend(fingerprints);
        self.paths.extend(files.map(str::to_string));
    }
}

/// A tenant-day read from the lake: its files and the copies (id, `ts`) in them.
pub(super) struct LoadedDay {
    pub(super) day: i32,
    pub(super) files: BTreeSet<String>,
    pub(super) copies: Vec<(Box<str>, i64)>,
}

/// The known copies of one tenant, borrowed for checking a batch.
pub(super) struct KnownIds<'a> {
    ids: &'a mut TenantIds,
    total: &'a mut usize,
    pub(super) window: DedupWindow,
}

impl KnownIds<'_> {
    /// Replaces the copies of the days read from the lake with what was read,
    /// except on the `open` days, whose copies not yet committed are kept: what
    /// was read is added to them, each copy once.
    pub(super) fn load_days(&mut self, loaded: Vec<LoadedDay>, open: &BTreeSet<i32>) {
        if loaded.is_empty() {
            return;
        }
        let replaced: BTreeSet<i32> = loaded
            .iter()
            .map(|l| l.day)
            .filter(|day| !open.contains(day))
            .collect();
        self.retain_copies(|day| !replaced.contains(&day));
        for LoadedDay { day, files, copies } in loaded {
            self.ids.days.insert(day, files);
            for (id, ts) in copies {
                let held = open.contains(&day)
                    && self
                        .ids
                        .ids
                        .get(&id)
                        .is_some_and(|c| c.times().contains(&ts));
                if !held {
                    self.add(id, ts);
                }
            }
        }
    }

    pub(super) fn add(&mut self, id: Box<str>, ts: i64) {
        self.ids.copies += 1;
        *self.total += 1;
        match self.ids.ids.get_mut(&id) {
            Some(copies) => copies.push(ts),
            None => {
                self.ids.ids.insert(id, Copies::One(ts));
            }
        }
    }

    /// Forgets the copies on days outside `days`, so a long backfill of one
    /// tenant does not accumulate its whole history.
    pub(super) fn keep_days(&mut self, days: std::ops::RangeInclusive<i32>) {
        if self.ids.days.keys().all(|d| days.contains(d)) {
            return;
        }
        self.ids.days.retain(|d, _| days.contains(d));
        self.retain_copies(|day| days.contains(&day));
    }

    /// Keeps the copies whose day `keep` accepts.
    pub(super) fn retain_copies(&mut self, keep: impl Fn(i32) -> bool) {
        let mut left = 0;
        // In place: this runs over every id of a tenant, most with one copy.
        self.ids.ids.retain(|_, copies| match copies {
            Copies::One(ts) => {
                let kept = keep(epoch_day_of_micros(*ts));
                left += usize::from(kept);
                kept
            }
            Copies::Many(times) => {
                times.retain(|ts| keep(epoch_day_of_micros(*ts)));
                left += times.len();
                match times.as_slice() {
                    [] => false,
                    [one] => {
                        *copies = Copies::One(*one);
                        true
                    }
                    _ => true,
                }
            }
        });
        *self.total = *self.total - self.ids.copies + left;
        self.ids.copies = left;
    }

    /// Records a copy of `event_id` at `ts`; false when the tenant already has a
    /// copy within the window.
    pub(super) fn insert(&mut self, event_id: &str, ts: i64) -> bool {
        if let Some(copies) = self.ids.ids.get(event_id)
            && copies.times().iter().any(|t| self.window.within(*t, ts))
        {
            return false;
        }
        self.add(Box::from(event_id), ts);
        true
    }
}

/// The `event_id` and `ts` columns of a `usage_events` batch.
pub(super) fn event_columns(batch: &RecordBatch) -> (&StringArray, &TimestampMicrosecondArray) {
    let ids = batch
        .column_by_name("event_id")
        .expect("schema")
        .as_string::<i32>();
    let times = batch
        .column_by_name("ts")
        .expect("schema")
        .as_primitive::<TimestampMicrosecondType>();
    (ids, times)
}

#[cfg(test)]
mod tests {
    use allot_schemas::time::{MICROS_PER_DAY, date_of_epoch_days};

    use super::*;

    pub(super) fn day(day: i32, files: &[&str], copies: &[(&str, i64)]) -> LoadedDay {
        LoadedDay {
            day,
            files: files.iter().map(|f| f.to_string()).collect(),
            copies: copies
                .iter()
                .map(|(id, ts)| (Box::from(*id), *ts))
                .collect(),
        }
    }

    pub(super) fn paths(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    pub(super) fn forgetting_a_copy_removes_that_copy_only() {
        let mut tenant = TenantIds::default();
        tenant.ids.insert(Box::from("e1"), Copies::Many(vec![1, 2]));
        tenant.copies = 2;
        assert!(!tenant.forget("e1", 5), "no copy at 5");
        assert!(!tenant.forget("e2", 1), "no such id");
        assert!(tenant.forget("e1", 2));
        assert!(matches!(tenant.ids["e1"], Copies::One(1)));
        assert!(tenant.forget("e1", 1));
        assert!(tenant.ids.is_empty());
        assert_eq!(tenant.copies, 0);
    }

    #[test]
    pub(super) fn cache_checks_the_window_and_evicts_old_tenants() {
        const DAY: i64 = MICROS_PER_DAY;
        let mut known = KnownEventIds::new(4, DedupWindow::default());
        {
            let mut a = known.tenant_mut("a");
            a.load_days(vec![day(10, &["f1"], &[("x", 10 * DAY)])], &BTreeSet::new());
            // 34 days later: the same event; 35 days later: another one.
            assert!(!a.insert("x", 44 * DAY));
            assert!(a.insert("x", 45 * DAY));
            assert!(!a.insert("x", 45 * DAY + 5));
            assert!(a.insert("y", 45 * DAY));
        }
        known.advance(&HashMap::new());
        let a10 = TenantDay::new("a", date_of_epoch_days(10).unwrap());
        assert!(known.knows_day(&a10, &paths(&["f1"])));
        // Another writer's file on the day: the cached copies are no longer all.
        assert!(!known.knows_day(&a10, &paths(&["f1", "f2"])));
        known.add_file(&a10, "f2".to_string());
        assert!(known.knows_day(&a10, &paths(&["f1", "f2"])));
        // Compaction replaced the files: read the day again.
        assert!(!known.knows_day(&a10, &paths(&["f3"])));
        {
            let mut b = known.tenant_mut("b");
            for (i, id) in ["1", "2"].into_iter().enumerate() {
                assert!(b.insert(id, i as i64));
            }
        }
        // 5 ids over a cap of 4: the older tenant goes, down to half the cap.
        known.advance(&HashMap::new());
        assert!(!known.knows_day(&a10, &paths(&["f1", "f2"])));
        assert!(known.tenants.contains_key("b"));
    }

    #[test]
    pub(super) fn dropping_a_tenant_keeps_the_copies_of_its_open_days() {
        const DAY: i64 = MICROS_PER_DAY;
        let mut known = KnownEventIds::new(2, DedupWindow::default());
        {
            let mut a = known.tenant_mut("a");
            a.load_days(vec![day(10, &["f1"], &[("x", 10 * DAY)])], &BTreeSet::new());
            // Checked into day 11, which is open: not in any file yet.
            assert!(a.insert("y", 11 * DAY));
        }
        known.advance(&HashMap::new());
        {
            let mut b = known.tenant_mut("b");
            assert!(b.insert("1", 0));
        }
        // Over the cap: a's committed copies go, its open day's stay, and its
        // days are unknown (read again when needed); b goes whole.
        let open = HashMap::from([("a".to_string(), BTreeSet::from([11]))]);
        known.advance(&open);
        let a10 = TenantDay::new("a", date_of_epoch_days(10).unwrap());
        assert!(!known.knows_day(&a10, &paths(&["f1"])));
        assert_eq!(known.total, 1);
        assert!(!known.tenants.contains_key("b"));
        let mut a = known.tenant_mut("a");
        assert!(!a.insert("y", 11 * DAY + 1), "the open copy still counts");
        assert!(a.insert("x", 12 * DAY), "the committed copy left the cache");
    }

    #[test]
    pub(super) fn copies_no_pass_can_drop_do_not_start_a_pass_per_tenant() {
        const DAY: i64 = MICROS_PER_DAY;
        let mut known = KnownEventIds::new(4, DedupWindow::default());
        let open = HashMap::from([("a".to_string(), BTreeSet::from([11]))]);
        {
            let mut a = known.tenant_mut("a");
            for i in 0..6 {
                assert!(a.insert(&format!("a{i}"), 11 * DAY + i));
            }
        }
        // Over the cap, but every copy is on an open day: the pass keeps them.
        known.advance(&open);
        assert_eq!((known.total, known.left_after_pass), (6, 6));
        // The next tenants are not dropped until half the cap is added on top.
        for tenant in ["b", "c"] {
            assert!(known.tenant_mut(tenant).insert("1", 0));
            known.advance(&open);
            assert!(known.tenants.contains_key(tenant));
        }
        assert_eq!(known.total, 8);
        assert!(known.tenant_mut("d").insert("1", 0));
        known.advance(&open);
        // Every tenant without open days goes; a's open copies stay.
        assert_eq!(known.tenants.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!((known.total, known.left_after_pass), (6, 6));
    }

    #[test]
    pub(super) fn days_outside_the_range_are_forgotten() {
        let mut known = KnownEventIds::new(100, DedupWindow::default());
        let mut a = known.tenant_mut("a");
        a.load_days(
            vec![
                day(1, &["f1"], &[("x", MICROS_PER_DAY)]),
                day(50, &["f50"], &[("x", 50 * MICROS_PER_DAY)]),
            ],
            &BTreeSet::new(),
        );
        a.keep_days(40..=60);
        assert_eq!(a.ids.copies, 1);
        assert!(a.insert("x", 10 * MICROS_PER_DAY));
        assert!(!a.insert("x", 49 * MICROS_PER_DAY));
    }

    #[test]
    pub(super) fn reloading_a_day_replaces_its_copies() {
        let mut known = KnownEventIds::new(100, DedupWindow::default());
        let mut a = known.tenant_mut("a");
        let none = BTreeSet::new();
        a.load_days(vec![day(5, &["f1"], &[("x", 5 * MICROS_PER_DAY)])], &none);
        a.load_days(vec![day(5, &["f2"], &[("y", 5 * MICROS_PER_DAY)])], &none);
        assert_eq!(a.ids.copies, 1);
        assert!(a.insert("x", 5 * MICROS_PER_DAY));
        assert!(!a.insert("y", 5 * MICROS_PER_DAY));
    }

    #[test]
    pub(super) fn reloading_an_open_day_keeps_its_uncommitted_copies() {
        let mut known = KnownEventIds::new(100, DedupWindow::default());
        let mut a = known.tenant_mut("a");
        let open = BTreeSet::from([5]);
        a.load_days(vec![day(5, &["f1"], &[("x", 5 * MICROS_PER_DAY)])], &open);
        // A row checked into the open day, not committed yet.
        assert!(a.insert("y", 5 * MICROS_PER_DAY + 1));
        // The day read again (its committed file holds x only): y stays, x once.
        a.load_days(vec![day(5, &["f1"], &[("x", 5 * MICROS_PER_DAY)])], &open);
        assert_eq!(a.ids.copies, 2);
        assert!(!a.insert("y", 5 * MICROS_PER_DAY + 2));
        assert!(!a.insert("x", 5 * MICROS_PER_DAY + 2));
    }

    #[test]
    pub(super) fn written_ids_vouch_only_for_their_own_files() {
        let mut written = WrittenIds::default();
        let fingerprints = vec![written.fingerprint("a", "x"), written.fingerprint("a", "y")];
        written.record_fingerprints(fingerprints, ["p1"].into_iter());
        assert!(written.wrote_all(&paths(&["p1"])));
        assert!(written.wrote_all(&[]));
        assert!(!written.wrote_all(&paths(&["p1", "other"])));
        assert!(written.has_any("a", ["z", "y"].into_iter()));
        assert!(!written.has_any("a", ["z"].into_iter()));
        assert!(!written.has_any("b", ["x"].into_iter()));
    }
}
