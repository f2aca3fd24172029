//! The dedup window (docs/reference.md#duplicates) end to end: random events with copies on other
//! days, inside and outside the window, written by writers that do not see each
//! other (as two collectors) and by file backfills that check the lake, each
//! committing in an order of its own (a writer that stamped its rows earlier may
//! commit later), give the figures of the deduplicated set computed here
//! independently — before compaction, after it, with rollups and without.

use std::collections::BTreeMap;

use allot_ingest::assemble::EventAssembler;
use allot_ingest::writer::LakeWriter;
use allot_lake::dedup::{DedupWindow, Neighbourhoods};
use allot_lake::session::{LakeSession, Scope, SessionLimits};
use allot_lake::snapshot::LakeSnapshot;
use allot_query::usage::{UsageFilter, counter_days};
use allot_schemas::clock::FixedClock;
use allot_schemas::config::Config;
use allot_schemas::layout::{LakeLocation, Provenance};
use proptest::prelude::*;

const DAY: i64 = 86_400_000_000;
const HOUR: i64 = 3_600_000_000;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000_000;
const TENANTS: [&str; 2] = ["acme", "bravo"];

/// One copy of an event sent by a producer.
#[derive(Debug, Clone)]
struct Sent {
    tenant: usize,
    id: usize,
    ts: i64,
    value: u32,
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        0..TENANTS.len(),
        0usize..5,
        0i64..100 * 24,
        0i64..60,
        1u32..1000,
    )
        .prop_map(|(tenant, id, hour, minute, value)| Sent {
            tenant,
            id,
            ts: START + hour * HOUR + minute * 60_000_000,
            value,
        })
}

/// One writer's batch: a collector checks only the batch, a file backfill also
/// the lake as its earlier commits left it.
#[derive(Debug, Clone)]
struct Round {
    events: Vec<Sent>,
    backfill: bool,
}

/// Rounds (ingested one after the other) and the order they commit in.
fn rounds() -> impl Strategy<Value = (Vec<Round>, Vec<usize>)> {
    let round = (proptest::collection::vec(sent(), 0..10), any::<bool>())
        .prop_map(|(events, backfill)| Round { events, backfill });
    proptest::collection::vec(round, 1..4).prop_flat_map(|rounds| {
        let order: Vec<usize> = (0..rounds.len()).collect();
        (Just(rounds), Just(order).prop_shuffle())
    })
}

/// A row in the lake: the copy, and its place in the ingestion order.
#[derive(Debug, Clone)]
struct Row {
    sent: Sent,
    order: (usize, usize),
}

/// What the writers leave in the lake, committing in `order`: each round is one
/// writer with an empty cache, which drops a copy within the window of one it
/// kept in the round or, for a backfill, of one already in the lake.
fn lake_rows(rounds: &[Round], order: &[usize], window: i64) -> Vec<Row> {
    let same =
        |a: &Sent, b: &Sent| a.tenant == b.tenant && a.id == b.id && (a.ts - b.ts).abs() < window;
    let mut rows: Vec<Row> = Vec::new();
    for &round in order {
        let before = rows.len();
        for (i, event) in rounds[round].events.iter().enumerate() {
            let seen = if rounds[round].backfill {
                &rows[..]
            } else {
                &rows[before..]
            };
            if !seen.iter().any(|r| same(&r.sent, event)) {
                rows.push(Row {
                    sent: event.clone(),
                    order: (round, i),
                });
            }
        }
    }
    rows
}

/// The rows that count: no copy ingested earlier within the window.
fn counted(rows: &[Row], window: i64) -> Vec<Row> {
    rows.iter()
        .filter(|row| {
            !rows.iter().any(|other| {
                other.order < row.order
                    && other.sent.tenant == row.sent.tenant
                    && other.sent.id == row.sent.id
                    && (other.sent.ts - row.sent.ts).abs() < window
            })
        })
        .cloned()
        .collect()
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn write_rounds(lake: &LakeLocation, rounds: &[Round], order: &[usize], window: DedupWindow) {
    write_rounds_at(lake, rounds, order, window, START + 365 * DAY).await;
}

/// [`write_rounds`] with round r ingested at `first_ingested` + r seconds.
async fn write_rounds_at(
    lake: &LakeLocation,
    rounds: &[Round],
    order: &[usize],
    window: DedupWindow,
    first_ingested: i64,
) {
    let config = Config::default();
    for &round in order {
        let Round { events, backfill } = &rounds[round];
        let mut writer = if *backfill {
            LakeWriter::for_backfill(lake, window, 64 << 20)
                .await
                .unwrap()
        } else {
            LakeWriter::for_collector(lake, window).await.unwrap()
        };
        // Each round ingests one second after the previous one.
        let now = first_ingested + i64::try_from(round).unwrap() * 1_000_000;
        let mut assembler = EventAssembler::new(&config, std::sync::Arc::new(FixedClock::new(now)));
        for (i, event) in events.iter().enumerate() {
            let line = format!(
                r#"{{"event_id":"e{}","tenant_id":"{}","ts":"{}","metric":"compute_seconds","value":{}}}"#,
                event.id,
                TENANTS[event.tenant],
                rfc3339(event.ts),
                event.value
            );
            assembler.push(
                line.as_bytes(),
                Provenance::Kafka {
                    topic: "usage",
                    partition: 0,
                    // Same width, so the sources order as the messages.
                    offset: 100_000 + i64::try_from(i).unwrap(),
                },
            );
        }
        writer.append(assembler.take().unwrap()).await.unwrap();
        writer.finish().await.unwrap();
    }
}

/// Σ value per tenant of the counted rows in `[from, to)`.
fn expected(rows: &[Row], from: i64, to: i64) -> BTreeMap<String, String> {
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for row in rows {
        if row.sent.ts >= from && row.sent.ts < to {
            *sums
                .entry(TENANTS[row.sent.tenant].to_string())
                .or_default() += u64::from(row.sent.value);
        }
    }
    sums.into_iter().map(|(t, v)| (t, v.to_string())).collect()
}

/// Σ of the counter days per tenant in `[from, to)`, as reports read them.
async fn reported(
    lake: &LakeLocation,
    window: DedupWindow,
    rollups: bool,
    from: i64,
    to: i64,
) -> BTreeMap<String, String> {
    let snapshot = LakeSnapshot::load(lake).await.unwrap();
    let limits = SessionLimits {
        dedup_window: window,
        ..SessionLimits::default()
    };
    let mut session = LakeSession::new(&snapshot, &Scope::AllTenants, &limits).unwrap();
    if rollups {
        session
            .attach_rollups(&snapshot.hourly, &Config::default().catalog())
            .unwrap();
    }
    let days = counter_days(
        &session,
        &UsageFilter::default(),
        &["compute_seconds".to_string()],
        from,
        to,
    )
    .await
    .unwrap();
    days.into_iter()
        .filter_map(|(tenant, days)| {
            let sum = days.into_iter().map(|d| d.raw_sum).reduce(|a, b| a + b)?;
            let sum = sum.with_scale(0).to_string();
            (sum != "0").then_some((tenant, sum))
        })
        .collect()
}

/// Ranges every case checks: whole months, and a range with edges inside hours.
fn ranges(odd: (i64, i64)) -> Vec<(i64, i64)> {
    let month = |m: u32| {
        chrono::NaiveDate::from_ymd_opt(2026, m, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    };
    let (a, b) = (odd.0.min(odd.1), odd.0.max(odd.1) + 1);
    vec![
        (month(1), month(2)),
        (month(2), month(3)),
        (month(3), month(4)),
        (month(4), month(5)),
        (START + a, START + b),
    ]
}

fn check_figures(
    runtime: &tokio::runtime::Runtime,
    lake: &LakeLocation,
    window: DedupWindow,
    rows: &[Row],
    odd: (i64, i64),
    rollups: bool,
) -> Result<(), TestCaseError> {
    for (from, to) in ranges(odd) {
        let got = runtime.block_on(reported(lake, window, rollups, from, to));
        prop_assert_eq!(
            got,
            expected(rows, from, to),
            "[{}, {}) rollups {}",
            rfc3339(from),
            rfc3339(to),
            rollups
        );
    }
    Ok(())
}

/// Backfills `rounds` one after the other (ingested and committed in order), each
/// batch of `(tenant, id, day)` events in one writer.
async fn backfill(lake: &LakeLocation, batches: &[Vec<(usize, usize, i64)>]) {
    let rounds: Vec<Round> = batches
        .iter()
        .map(|events| Round {
            events: events
                .iter()
                .map(|&(tenant, id, day)| Sent {
                    tenant,
                    id,
                    ts: START + day * DAY + HOUR,
                    value: 1,
                })
                .collect(),
            backfill: true,
        })
        .collect();
    let order: Vec<usize> = (0..rounds.len()).collect();
    write_rounds(lake, &rounds, &order, DedupWindow::default()).await;
}

/// The paths of the partitions a report must check, on the lake as it is.
async fn checked_partitions(lake: &LakeLocation) -> Vec<String> {
    let snapshot = LakeSnapshot::load(lake).await.unwrap();
    let near = Neighbourhoods::of(&snapshot.usage.files, DedupWindow::default(), |_, _| true);
    near.checked.into_iter().map(|f| f.path).collect()
}

/// A lake backfilled a day at a time needs no check in reports: every file was
/// checked against the days before it. Compaction's rewrites keep that, and a
/// collector's file ingested earlier but committed later undoes it.
#[tokio::test]
async fn backfilled_days_need_no_check_until_a_collector_races_them() {
    let dir = tempfile::tempdir().unwrap();
    let lake = LakeLocation::parse(dir.path().to_str().unwrap()).unwrap();
    // Day 0, day 1 (with a copy of a day-0 event, dropped), then day 1 again:
    // two files on day 1.
    backfill(
        &lake,
        &[
            vec![(0, 1, 0), (0, 2, 0)],
            vec![(0, 3, 1), (0, 1, 1)],
            vec![(0, 4, 1)],
        ],
    )
    .await;
    assert_eq!(checked_partitions(&lake).await, Vec::<String>::new());

    let compact = || {
        allot_lake::compact(
            allot_lake::CompactOptions {
                lake: lake.clone(),
                target_file_bytes: 128 << 20,
                min_files: 2,
                catalog: Config::default().catalog(),
                dedup_window: DedupWindow::default(),
            },
            tokio_util::sync::CancellationToken::new(),
        )
    };
    let summary = compact().await.unwrap();
    assert_eq!((summary.partitions, summary.duplicates_removed), (1, 0));
    assert_eq!(checked_partitions(&lake).await, Vec::<String>::new());
    let counted = reported(&lake, DedupWindow::default(), false, START, START + 2 * DAY).await;
    assert_eq!(
        counted,
        BTreeMap::from([("acme".to_string(), "4".to_string())])
    );

    // A collector stamped a copy of event 3 before the backfills but commits
    // only now: day 1's rows must be checked against it again.
    let rounds = vec![Round {
        events: vec![Sent {
            tenant: 0,
            id: 3,
            ts: START + 2 * DAY,
            value: 1,
        }],
        backfill: false,
    }];
    write_rounds_at(
        &lake,
        &rounds,
        &[0],
        DedupWindow::default(),
        START + 364 * DAY,
    )
    .await;
    assert!(!checked_partitions(&lake).await.is_empty());
    let counted = reported(&lake, DedupWindow::default(), false, START, START + 3 * DAY).await;
    assert_eq!(
        counted,
        BTreeMap::from([("acme".to_string(), "4".to_string())])
    );
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        rng_seed: proptest::test_runner::RngSeed::Fixed(17),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every figure is the deduplicated set's, before and after compaction.
    #[test]
    fn reports_count_each_event_once_within_the_window(
        (rounds, order) in rounds(),
        odd in (0i64..100 * DAY, 0i64..100 * DAY),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let lake = LakeLocation::parse(dir.path().to_str().unwrap()).unwrap();
        let window = DedupWindow::default();
        runtime.block_on(write_rounds(&lake, &rounds, &order, window));
        let rows = lake_rows(&rounds, &order, window.micros());
        let counted = counted(&rows, window.micros());
        if rows.is_empty() {
            return Ok(());
        }
        check_figures(&runtime, &lake, window, &counted, odd, false)?;

        let summary = runtime
            .block_on(allot_lake::compact(
                allot_lake::CompactOptions {
                    lake: lake.clone(),
                    target_file_bytes: 128 << 20,
                    min_files: 2,
                    catalog: Config::default().catalog(),
                    dedup_window: window,
                },
                tokio_util::sync::CancellationToken::new(),
            ))
            .unwrap();
        // Compaction removed exactly the copies that do not count.
        prop_assert_eq!(summary.duplicates_removed as usize, rows.len() - counted.len());
        check_figures(&runtime, &lake, window, &counted, odd, true)?;
        check_figures(&runtime, &lake, window, &counted, odd, false)?;
    }
}
