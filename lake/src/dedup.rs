//! The dedup window (docs/reference.md#duplicates): which copies of a `(tenant_id,
//! event_id)` count.
//!
//! **The rule.** Copies are ordered by ingestion: earlier `ingested_at` first,
//! then the smaller `source`, then the earlier `ts`. A row counts unless a copy
//! ingested before it has a `ts` less than the window away from its own (rows
//! equal in all three, the same row stored twice, count once). So the
//! first ingested copy counts, a copy further than the window from every earlier
//! one is a distinct event, and rows ingested later never change whether an
//! earlier row counts. The writers apply the same rule when they drop a copy
//! (the copies they compare with were all ingested before), compaction removes
//! the rows it rejects, and every report reads the lake through it, so a figure
//! does not depend on what ingest or compaction have done so far.
//!
//! **What a partition's rows depend on.** The rows of a tenant-day can only be
//! beaten by copies of the same tenant within [`DedupWindow::reach_days`] days,
//! in files whose earliest `ingested_at` is not after the partition's latest
//! (the Delta statistics give both per file). [`Neighbourhoods`] finds those
//! files; a partition with one file and no such neighbour needs no check at
//! all (a file never holds two copies of an id), which is the common case of a
//! lake written in time order and compacted. Nor does a file whose writer
//! checked it against the table: a file backfill tags what it writes with the
//! version it checked against (`allot.checked_at`), and every append tags its
//! files with their own version (`allot.version`), so a neighbour added at or
//! before that version cannot beat one of its rows. The others are checked by a
//! join of their rows with the copies of the ids that occur more than once
//! among their neighbours' rows.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use allot_schemas::config::DEFAULT_DEDUP_WINDOW;
use allot_schemas::layout::TenantDay;
use allot_schemas::table_schema::{USAGE_PARTITION_COLUMNS, usage_events_schema};
use allot_schemas::time::MICROS_PER_DAY;
use arrow::datatypes::DataType;
use chrono::NaiveDate;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::functions_aggregate::expr_fn::count;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, ExprFunctionExt, JoinType};
use datafusion::prelude::{DataFrame, SessionContext, cast, col, lit};

use crate::error::LakeError;
use crate::provider::LakeFilesTable;
use crate::snapshot::LakeFile;

/// The dedup window: copies whose `ts` are less than this apart are one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupWindow {
    micros: i64,
}

impl Default for DedupWindow {
    fn default() -> Self {
        DedupWindow::new(DEFAULT_DEDUP_WINDOW)
    }
}

impl DedupWindow {
    /// A window of `duration` (at least a day is enforced by the configuration;
    /// shorter ones are widened to a day here, so copies on one day are one event).
    pub fn new(duration: Duration) -> DedupWindow {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX / 4);
        DedupWindow {
            micros: micros.clamp(MICROS_PER_DAY, i64::MAX / 4),
        }
    }

    /// The window in microseconds.
    pub fn micros(self) -> i64 {
        self.micros
    }

    /// How many days either side of an event's UTC day a copy within the window
    /// may lie on.
    pub fn reach_days(self) -> i64 {
        self.micros.div_euclid(MICROS_PER_DAY) + i64::from(self.micros % MICROS_PER_DAY != 0)
    }

    /// Whether two instants are within the window of each other.
    pub fn within(self, a: i64, b: i64) -> bool {
        a.abs_diff(b) < self.micros.unsigned_abs()
    }
}

/// The files a set of target partitions must be checked against.
#[derive(Debug, Default)]
pub struct Neighbourhoods {
    /// Target files whose partition needs no check: one file, no earlier copy
    /// possible.
    pub alone: Vec<LakeFile>,
    /// Target files of the partitions that must be checked.
    pub checked: Vec<LakeFile>,
    /// Every file whose rows may beat a row of `checked` (they included).
    pub lookup: Vec<LakeFile>,
    /// Per checked partition, its neighbours' paths (its own files first), for
    /// the rollup basis.
    pub neighbours: BTreeMap<TenantDay, Vec<String>>,
}

/// A partition of the scope: its files (a range of the sorted file list) and the
/// latest `ingested_at` of their rows.
struct Partition<'a> {
    tenant: &'a str,
    day: NaiveDate,
    files: std::ops::Range<usize>,
    last_ingested: i64,
}

impl Neighbourhoods {
    /// Splits the files of the partitions that `target` selects among `files`
    /// (every file of the scope, sorted by tenant, day and path).
    pub fn of(
        files: &[LakeFile],
        window: DedupWindow,
        target: impl Fn(&str, NaiveDate) -> bool,
    ) -> Neighbourhoods {
        let mut partitions: Vec<Partition<'_>> = Vec::new();
        let mut start = 0;
        for end in 1..=files.len() {
            let same = |a: &LakeFile, b: &LakeFile| a.tenant_id == b.tenant_id && a.day == b.day;
            if end < files.len() && same(&files[start], &files[end]) {
                continue;
            }
            let group = &files[start..end];
            let range = start..end;
            start = end;
            let Some(tenant) = group[0].tenant_id.as_deref() else {
                continue;
            };
            partitions.push(Partition {
                tenant,
                day: group[0].day,
                files: range,
                last_ingested: group.iter().map(|f| f.ingested.1).max().unwrap_or(i64::MAX),
            });
        }
        let reach = window.reach_days();
        let mut out = Neighbourhoods::default();
        // Indices into `files` of the files to look up.
        let mut lookup: BTreeSet<usize> = BTreeSet::new();
        for (i, partition) in partitions.iter().enumerate() {
            if !target(partition.tenant, partition.day) {
                continue;
            }
            // Neighbours: same tenant, within reach; of their files, those not
            // ingested wholly after this partition's rows.
            let near = |other: &Partition<'_>| {
                other.tenant == partition.tenant
                    && (other.day - partition.day).num_days().abs() <= reach
            };
            let mut others: Vec<usize> = (0..i)
                .rev()
                .take_while(|&j| near(&partitions[j]))
                .chain((i + 1..partitions.len()).take_while(|&j| near(&partitions[j])))
                .collect();
            others.sort_unstable();
            let near_files: Vec<usize> = others
                .into_iter()
                .flat_map(|j| partitions[j].files.clone())
                .collect();
            let own = &files[partition.files.clone()];
            if !partition.files.clone().any(|f| {
                let others = partition.files.clone().filter(|&g| g != f);
                others
                    .chain(near_files.iter().copied())
                    .any(|g| may_beat(&files[g], &files[f]))
            }) {
                out.alone.extend(own.iter().cloned());
                continue;
            }
            let earlier: Vec<usize> = near_files
                .into_iter()
                .filter(|&f| files[f].ingested.0 <= partition.last_ingested)
                .collect();
            out.checked.extend(own.iter().cloned());
            lookup.extend(partition.files.clone().chain(earlier.iter().copied()));
            let paths: Vec<String> = partition
                .files
                .clone()
                .chain(earlier)
                .map(|f| files[f].path.clone())
                .collect();
            out.neighbours
                .insert(TenantDay::new(partition.tenant, partition.day), paths);
        }
        out.lookup = lookup.into_iter().map(|i| files[i].clone()).collect();
        out
    }
}

/// Whether a row of `other` (a file of the same tenant within reach) may beat a
/// row of `file`: it holds rows ingested no later than some of `file`'s, and
/// `file`'s writer did not check against it (it was added after the version
/// `file` was checked at, or either version is unknown).
fn may_beat(other: &LakeFile, file: &LakeFile) -> bool {
    let seen = matches!(
        (file.dedup.checked_at, other.dedup.version),
        (Some(checked), Some(added)) if added <= checked
    );
    other.ingested.0 <= file.ingested.1 && !seen
}

/// Prefix of the columns of the other copies in the check (never visible).
const OTHER_PREFIX: &str = "__allot_other_";
/// Column of the copy count while finding repeated ids, and of the copy number
/// among identical rows (never visible).
const COPIES: &str = "__allot_copies";

/// The table over `files` of `usage_events`.
pub(crate) fn usage_table(store: &ObjectStoreUrl, files: Vec<LakeFile>) -> Arc<LakeFilesTable> {
    Arc::new(LakeFilesTable::new(
        usage_events_schema(),
        &USAGE_PARTITION_COLUMNS,
        store.clone(),
        files,
    ))
}

/// What [`checked_rows`] returns: the rows that count, or the rows that do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The rows of the checked partitions that count.
    Counted,
    /// The rows of the checked partitions that a copy ingested earlier beats.
    Beaten,
}

/// The rows of `near.checked` that count (or are beaten), judged against the
/// copies in `near.lookup`; every column of `usage_events`.
pub(crate) fn checked_rows(
    ctx: &SessionContext,
    store: &ObjectStoreUrl,
    near: &Neighbourhoods,
    window: DedupWindow,
    outcome: Outcome,
) -> Result<DataFrame, LakeError> {
    let key = ["tenant_id", "event_id"];
    let other = |c: &str| format!("{OTHER_PREFIX}{c}");
    let lookup = ctx
        .read_table(usage_table(store, near.lookup.clone()))
        .map_err(LakeError::from)?;
    // Ids present more than once among the neighbours: a hash aggregate.
    let repeated = lookup
        .clone()
        .aggregate(
            key.iter().map(|c| col(*c)).collect(),
            vec![count(lit(1)).alias(COPIES)],
        )
        .and_then(|f| f.filter(col(COPIES).gt(lit(1i64))))
        .and_then(|f| {
            f.select(
                key.iter()
                    .map(|c| col(*c).alias(other(c)))
                    .collect::<Vec<_>>(),
            )
        })
        .map_err(LakeError::from)?;
    let other_key: Vec<String> = key.iter().map(|c| other(c)).collect();
    let other_key: Vec<&str> = other_key.iter().map(String::as_str).collect();
    let targets = ctx
        .read_table(usage_table(store, near.checked.clone()))
        .map_err(LakeError::from)?;
    let micros = |c: &str| cast(col(c), DataType::Int64);
    // The copies of repeated ids, as the other side of the check.
    let copies = lookup
        .join(repeated.clone(), JoinType::LeftSemi, &key, &other_key, None)
        .and_then(|f| {
            f.select(vec![
                col("tenant_id").alias(other("tenant_id")),
                col("event_id").alias(other("event_id")),
                micros("ts").alias(other("ts")),
                micros("ingested_at").alias(other("ingested_at")),
                col("source").alias(other("source")),
            ])
        })
        .map_err(LakeError::from)?;
    let ingested_before = |c: &str| col(other(c)).lt(micros(c));
    let same = |c: &str| col(other(c)).eq(micros(c));
    let earlier = ingested_before("ingested_at")
        .or(same("ingested_at").and(col(other("source")).lt(col("source"))))
        .or(same("ingested_at")
            .and(col(other("source")).eq(col("source")))
            .and(ingested_before("ts")));
    let w = lit(window.micros());
    let within = (micros("ts") - col(other("ts")))
        .lt(w.clone())
        .and((col(other("ts")) - micros("ts")).lt(w));
    let on: Vec<Expr> = vec![
        col("tenant_id").eq(col(other("tenant_id"))),
        col("event_id").eq(col(other("event_id"))),
        earlier,
        within,
    ];
    let candidates = targets
        .clone()
        .join(repeated.clone(), JoinType::LeftSemi, &key, &other_key, None)
        .map_err(LakeError::from)?;
    let schema = usage_events_schema();
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    match outcome {
        Outcome::Counted => {
            let once = targets
                .join(repeated, JoinType::LeftAnti, &key, &other_key, None)
                .map_err(LakeError::from)?;
            // Rows equal in every part of the order (the same file's rows listed
            // twice) beat neither: one of them is kept.
            let copy_number = row_number()
                .partition_by(
                    ["tenant_id", "event_id", "ingested_at", "source", "ts"]
                        .iter()
                        .map(|c| col(*c))
                        .collect(),
                )
                .build()
                .map_err(LakeError::from)?
                .alias(COPIES);
            candidates
                .join_on(copies, JoinType::LeftAnti, on)
                .and_then(|f| f.window(vec![copy_number]))
                .and_then(|f| f.filter(col(COPIES).eq(lit(1u64))))
                .and_then(|f| f.select_columns(&columns))
                .and_then(|f| once.union(f))
                .map_err(LakeError::from)
        }
        Outcome::Beaten => candidates
            .join_on(copies, JoinType::LeftSemi, on)
            .and_then(|f| f.select_columns(&columns))
            .map_err(LakeError::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use allot_schemas::layout::{DedupTags, RollupRows};

    fn file(tenant: &str, day: u32, path: &str, ingested: (i64, i64)) -> LakeFile {
        LakeFile {
            path: path.to_string(),
            size: 1,
            tenant_id: Some(tenant.to_string()),
            day: NaiveDate::from_ymd_opt(2026, 10, day).unwrap(),
            ingested,
            dedup: DedupTags::default(),
            rows: RollupRows::Any,
        }
    }

    fn tagged(mut file: LakeFile, version: u64, checked_at: Option<u64>) -> LakeFile {
        file.dedup = DedupTags {
            version: Some(version),
            checked_at,
            ingested: None,
        };
        file
    }

    #[test]
    fn reach_covers_every_day_a_copy_may_fall_on() {
        assert_eq!(DedupWindow::default().reach_days(), 35);
        assert_eq!(
            DedupWindow::new(Duration::from_secs(86_400 + 1)).reach_days(),
            2
        );
        assert_eq!(DedupWindow::new(Duration::from_secs(60)).reach_days(), 1);
        let w = DedupWindow::default();
        assert!(w.within(0, 35 * MICROS_PER_DAY - 1));
        assert!(!w.within(35 * MICROS_PER_DAY, 0));
    }

    #[test]
    fn partitions_ingested_before_their_neighbours_are_alone() {
        let files = vec![
            file("a", 1, "a1", (10, 20)),
            file("a", 2, "a2", (30, 40)),
            file("a", 3, "a3x", (50, 60)),
            file("a", 3, "a3y", (70, 80)),
            file("b", 2, "b2", (5, 100)),
        ];
        let near = Neighbourhoods::of(&files, DedupWindow::default(), |_, _| true);
        let paths = |files: &[LakeFile]| files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        // a1 was ingested before everything near it; b2 has no neighbour.
        assert_eq!(paths(&near.alone), ["a1", "b2"]);
        assert_eq!(paths(&near.checked), ["a2", "a3x", "a3y"]);
        assert_eq!(paths(&near.lookup), ["a1", "a2", "a3x", "a3y"]);
        let day = |d| NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
        assert_eq!(near.neighbours[&TenantDay::new("a", day(2))], ["a2", "a1"]);
        assert_eq!(
            near.neighbours[&TenantDay::new("a", day(3))],
            ["a3x", "a3y", "a1", "a2"]
        );
        let only_a1 = Neighbourhoods::of(&files, DedupWindow::default(), |t, d| {
            t == "a" && d == day(1)
        });
        assert_eq!(paths(&only_a1.alone), ["a1"]);
        assert!(only_a1.lookup.is_empty());
    }

    #[test]
    fn files_checked_against_their_neighbours_are_alone() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 10, d).unwrap();
        let paths = |files: &[LakeFile]| files.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        // One backfill per day, each checked against the table before it.
        let backfilled = vec![
            tagged(file("a", 1, "a1", (10, 20)), 1, Some(0)),
            tagged(file("a", 2, "a2", (30, 40)), 2, Some(1)),
            tagged(file("a", 3, "a3", (50, 60)), 3, Some(2)),
        ];
        let near = Neighbourhoods::of(&backfilled, DedupWindow::default(), |_, _| true);
        assert_eq!(paths(&near.alone), ["a1", "a2", "a3"]);
        assert!(near.lookup.is_empty());

        // A file ingested earlier but committed after a2 was checked: a2 is
        // checked again, against it.
        let mut raced = backfilled.clone();
        raced.push(tagged(file("a", 4, "a4", (25, 26)), 4, None));
        raced.sort_by(|x, y| (x.day, &x.path).cmp(&(y.day, &y.path)));
        let near = Neighbourhoods::of(&raced, DedupWindow::default(), |_, _| true);
        assert_eq!(paths(&near.alone), ["a1"]);
        assert_eq!(paths(&near.checked), ["a2", "a3", "a4"]);
        assert_eq!(
            near.neighbours[&TenantDay::new("a", day(2))],
            ["a2", "a1", "a4"]
        );

        // Without the version tags nothing is vouched for.
        let untagged: Vec<LakeFile> = backfilled
            .iter()
            .map(|f| LakeFile {
                dedup: DedupTags {
                    version: None,
                    ..f.dedup
                },
                ..f.clone()
            })
            .collect();
        let near = Neighbourhoods::of(&untagged, DedupWindow::default(), |_, _| true);
        assert_eq!(paths(&near.alone), ["a1"]);

        // Two checked files of one day, the second checked against the first.
        let same_day = vec![
            tagged(file("b", 1, "b1x", (10, 20)), 1, Some(0)),
            tagged(file("b", 1, "b1y", (30, 40)), 2, Some(1)),
        ];
        let near = Neighbourhoods::of(&same_day, DedupWindow::default(), |_, _| true);
        assert_eq!(paths(&near.alone), ["b1x", "b1y"]);
        // The same two written at once, neither seeing the other.
        let concurrent = vec![
            tagged(file("b", 1, "b1x", (10, 20)), 1, Some(0)),
            tagged(file("b", 1, "b1y", (15, 40)), 2, Some(0)),
        ];
        let near = Neighbourhoods::of(&concurrent, DedupWindow::default(), |_, _| true);
        assert!(near.alone.is_empty());
    }
}
