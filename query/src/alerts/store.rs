//! The alerts' state and outbox: the Delta table `alerts` (docs/reference.md#alert-delivery).
//!
//! The table is a log of records, appended to and never changed (its files
//! are merged now and then, the records kept as they are,
//! [`AlertStore::compact`]):
//! - `notice`: an alert to send (its JSON body, fixed once, and its channels);
//! - `claim`: a server takes the delivery of a notice to a channel until an
//!   instant (its lease);
//! - `attempt`: one delivery attempt and its outcome (`delivered`, `failed`
//!   with the next attempt's time, or `given_up`), which also renews the
//!   attempting server's claim.
//!
//! Every commit carries a sequence number in a `txn` action of app id
//! [`ALERTS_APP_ID`] and goes ahead only if the table still records the number
//! its writer read ([`AlertStore::commit`]). Two servers that decide on the
//! same log — the same crossing, the same delivery to claim — cannot both
//! commit: the second is fenced, reads the first's records and decides again.
//! That is the whole of the coordination between replicas; no lock service.
//!
//! [`AlertLog`] is the table folded in memory: the last notice of each (rule,
//! tenant), and the state of each delivery.

use std::collections::BTreeMap;
use std::sync::Arc;

use allot_lake::LakeError;
use allot_lake::append::LogAppender;
use allot_lake::compact::log_table::{LogCompaction, compact_log_table};
use allot_lake::snapshot::read_small_table;
use allot_lake::txns::AppOffset;
use allot_schemas::layout::{LakeLocation, LakeTable};
use allot_schemas::table_schema::alerts_schema;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::Int64Type;
use arrow_schema::DataType;
use serde::{Deserialize, Serialize};

use super::evaluate::{AlertState, LastNotice, NewNotice};
use crate::error::QueryError;
use crate::period::format_micros;

pub use allot_schemas::table_schema::ALERTS_APP_ID;

/// A notice as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The idempotency key.
    pub key: String,
    /// The rule.
    pub rule: String,
    /// The tenant, or `*`.
    pub tenant_id: String,
    /// Firing or resolved.
    pub state: AlertState,
    /// The (rule, tenant)'s notice number.
    pub number: u64,
    /// The JSON body, exactly as every attempt sends it.
    pub body: String,
    /// The channels it goes to.
    pub channels: Vec<String>,
    /// When it was recorded, UTC microseconds.
    pub recorded_at: i64,
}

/// What became of one delivery (a notice to a channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// Not delivered yet; attempts go on.
    Pending,
    /// The channel answered 2xx.
    Delivered,
    /// Still failing after `alerts.give_up_after`.
    GivenUp,
}

impl DeliveryOutcome {
    /// `pending`, `delivered` or `given_up`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Pending => "pending",
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::GivenUp => "given_up",
        }
    }
}

/// One delivery's state, folded from its claims and attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Pending, delivered or given up.
    pub outcome: DeliveryOutcome,
    /// Attempts made.
    pub attempts: u32,
    /// The next attempt's time (pending only), UTC microseconds.
    pub next_attempt_at: i64,
    /// What the last failed attempt got.
    pub last_error: Option<String>,
    /// The server that holds it and until when.
    pub claim: Option<(String, i64)>,
}

/// The details of a `notice` record.
#[derive(Serialize, Deserialize)]
struct NoticeDetails {
    body: String,
    channels: Vec<String>,
    number: u64,
    state: String,
}

/// The details of a `claim` or `attempt` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptDetails {
    /// The server.
    pub by: String,
    /// Its claim lasts until (UTC microseconds).
    pub until: i64,
    /// For an attempt: its number, 1 for the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// For an attempt: `delivered`, `failed` or `given_up`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// For a failed attempt: what went wrong (status or error), never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a failed attempt: when the next one is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
}

/// One row of `alerts`, before it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertRecord {
    /// A notice to send.
    Notice(Notice),
    /// A server takes a delivery.
    Claim {
        /// The notice's key.
        key: String,
        /// The channel.
        channel: String,
        /// Who and until when.
        details: AttemptDetails,
        /// When.
        at: i64,
    },
    /// One attempt and its outcome.
    Attempt {
        /// The notice's key.
        key: String,
        /// The channel.
        channel: String,
        /// Who, which attempt, what came of it.
        details: AttemptDetails,
        /// When.
        at: i64,
    },
}

/// The `alerts` table folded: notices in order, the last of each (rule,
/// tenant), and each delivery's state.
#[derive(Debug, Clone, Default)]
pub struct AlertLog {
    /// The sequence number of the last commit read (`None`: empty table).
    pub seq: Option<i64>,
    /// Every notice, oldest first.
    pub notices: Vec<Notice>,
    /// (rule, tenant) → index in `notices` of its last notice.
    latest: BTreeMap<(String, String), usize>,
    /// (key, channel) → its delivery.
    pub deliveries: BTreeMap<(String, String), Delivery>,
}

impl AlertLog {
    /// Applies one record, in log order.
    fn apply(&mut self, record: AlertRecord) {
        match record {
            AlertRecord::Notice(notice) => {
                for channel in &notice.channels {
                    self.deliveries.insert(
                        (notice.key.clone(), channel.clone()),
                        Delivery {
                            outcome: DeliveryOutcome::Pending,
                            attempts: 0,
                            next_attempt_at: notice.recorded_at,
                            last_error: None,
                            claim: None,
                        },
                    );
                }
                self.latest.insert(
                    (notice.rule.clone(), notice.tenant_id.clone()),
                    self.notices.len(),
                );
                self.notices.push(notice);
            }
            AlertRecord::Claim {
                key,
                channel,
                details,
                ..
            } => {
                if let Some(delivery) = self.deliveries.get_mut(&(key, channel)) {
                    delivery.claim = Some((details.by, details.until));
                }
            }
            AlertRecord::Attempt {
                key,
                channel,
                details,
                ..
            } => {
                if let Some(delivery) = self.deliveries.get_mut(&(key, channel)) {
                    delivery.attempts = details.attempt.unwrap_or(delivery.attempts + 1);
                    delivery.claim = Some((details.by, details.until));
                    match details.outcome.as_deref() {
                        Some("delivered") => delivery.outcome = DeliveryOutcome::Delivered,
                        Some("given_up") => delivery.outcome = DeliveryOutcome::GivenUp,
                        _ => {}
                    }
                    delivery.last_error = details.error;
                    if let Some(next) = details.next_attempt_at {
                        delivery.next_attempt_at = next;
                    }
                }
            }
        }
    }

    /// The last notice of every (rule, tenant), as the evaluator takes it.
    pub fn last_notices(&self) -> BTreeMap<(String, String), LastNotice> {
        self.latest
            .iter()
            .map(|(id, &at)| {
                let notice = &self.notices[at];
                (
                    id.clone(),
                    LastNotice {
                        state: notice.state,
                        number: notice.number,
                        recorded_at: notice.recorded_at,
                        lake_version: notice.lake_version(),
                    },
                )
            })
            .collect()
    }

    /// Whether `notice` is the last of its (rule, tenant).
    pub fn is_current(&self, notice: &Notice) -> bool {
        self.latest
            .get(&(notice.rule.clone(), notice.tenant_id.clone()))
            .is_some_and(|&at| self.notices[at].key == notice.key)
    }

    /// The notice of `key`.
    pub fn notice(&self, key: &str) -> Option<&Notice> {
        self.notices.iter().rev().find(|n| n.key == key)
    }

    /// Firing (rule, tenant)s per rule.
    pub fn firing_by_rule(&self) -> BTreeMap<&str, u64> {
        let mut firing = BTreeMap::new();
        for ((rule, _), &at) in &self.latest {
            let count = firing.entry(rule.as_str()).or_insert(0);
            if self.notices[at].state == AlertState::Firing {
                *count += 1;
            }
        }
        firing
    }

    /// Pending deliveries due at `now` that `me` may attempt: unclaimed,
    /// claimed by `me`, or whose claim has lapsed. The flag says whether `me`
    /// must claim it first.
    pub fn due(&self, now: i64, me: &str) -> Vec<(String, String, bool)> {
        self.deliveries
            .iter()
            .filter(|(_, d)| d.outcome == DeliveryOutcome::Pending && d.next_attempt_at <= now)
            .filter_map(|((key, channel), d)| match &d.claim {
                Some((by, _)) if by == me => Some((key.clone(), channel.clone(), false)),
                Some((_, until)) if *until > now => None,
                _ => Some((key.clone(), channel.clone(), true)),
            })
            .collect()
    }
}

/// A notice's JSON body: `{rule, kind, tenant_id, state, value, threshold,
/// as_of, lake_version, key, reasons}`.
pub fn notice_body(notice: &NewNotice, as_of: i64, lake_version: Option<u64>) -> String {
    serde_json::json!({
        "rule": notice.rule,
        "kind": notice.kind,
        "tenant_id": notice.tenant_id,
        "state": notice.state.as_str(),
        "value": notice.value,
        "threshold": notice.threshold,
        "as_of": format_micros(as_of),
        "lake_version": lake_version,
        "key": notice.key(),
        "reasons": notice.reasons,
    })
    .to_string()
}

impl Notice {
    /// The `usage_events` version its facts were read at, as its body says.
    pub fn lake_version(&self) -> Option<u64> {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()?
            .get("lake_version")?
            .as_u64()
    }

    /// The record of `new`, found at `as_of` on `lake_version`, recorded at `now`.
    pub fn record(new: &NewNotice, as_of: i64, lake_version: Option<u64>, now: i64) -> Notice {
        Notice {
            key: new.key(),
            rule: new.rule.clone(),
            tenant_id: new.tenant_id.clone(),
            state: new.state,
            number: new.number,
            body: notice_body(new, as_of, lake_version),
            channels: new.channels.clone(),
            recorded_at: now,
        }
    }
}

/// Commits by this process after which it compacts the `alerts` table, when
/// the table then has at least as many files; a process that opens the table
/// tries once at its first chance.
pub const COMPACT_AFTER_COMMITS: usize = 64;

/// The `alerts` table of one lake, read and written by one process.
pub struct AlertStore {
    location: LakeLocation,
    appender: LogAppender,
    log: Arc<AlertLog>,
    /// This process's commits since it last compacted the table; at open, as
    /// many as make a compaction due.
    commits_since_compaction: usize,
}

impl AlertStore {
    /// Opens (creating it when needed) the `alerts` table of `location` and
    /// reads it.
    pub async fn open(location: &LakeLocation) -> Result<AlertStore, QueryError> {
        let appender = LogAppender::open(location, LakeTable::Alerts).await?;
        let mut store = AlertStore {
            location: location.clone(),
            appender,
            log: Arc::new(AlertLog::default()),
            commits_since_compaction: COMPACT_AFTER_COMMITS,
        };
        store.reload().await?;
        Ok(store)
    }

    /// The log as last read.
    pub fn log(&self) -> Arc<AlertLog> {
        Arc::clone(&self.log)
    }

    /// Reads what other processes committed since the last read (nothing when
    /// the sequence number did not move).
    pub async fn refresh(&mut self) -> Result<(), QueryError> {
        let recorded = self
            .appender
            .recorded_offsets(&[ALERTS_APP_ID.to_string()])
            .await?;
        if recorded.first().copied().flatten() != self.log.seq {
            self.reload().await?;
        }
        Ok(())
    }

    async fn reload(&mut self) -> Result<(), QueryError> {
        // The recorded number, read before the rows: an erasure removes rows
        // (the last commit's among them) and moves the number on, so the rows
        // alone may be behind it.
        let recorded = self
            .appender
            .recorded_offsets(&[ALERTS_APP_ID.to_string()])
            .await?
            .first()
            .copied()
            .flatten();
        let mut rows = Vec::new();
        for batch in read_small_table(&self.location, LakeTable::Alerts).await? {
            rows.extend(records_of(&batch)?);
        }
        // By commit; a stable sort keeps each commit's rows in the order
        // written, whether in the commit's own file or in a compacted one.
        rows.sort_by_key(|(seq, _)| *seq);
        let mut log = AlertLog::default();
        for (seq, record) in rows {
            log.seq = Some(seq);
            log.apply(record);
        }
        // Rows read at a later version than the number: the next commit is
        // fenced and reads again, so `seq` never runs ahead of the table.
        log.seq = log.seq.max(recorded);
        self.log = Arc::new(log);
        Ok(())
    }

    /// Commits `records` as one commit fenced on the sequence number read.
    /// `Ok(false)`: another process committed first; the log is read again
    /// and the caller decides anew on it.
    pub async fn commit(&mut self, records: Vec<AlertRecord>) -> Result<bool, QueryError> {
        if records.is_empty() {
            return Ok(true);
        }
        let seq = self.log.seq.map_or(0, |s| s + 1);
        let batch = batch_of(seq, &records)?;
        let mut writer = self.appender.file_writer()?;
        writer.write(batch).await?;
        let files = writer.flush().await?;
        let committed = self
            .appender
            .append(
                files,
                vec![AppOffset::new(ALERTS_APP_ID, seq)],
                &[(ALERTS_APP_ID.to_string(), self.log.seq)],
            )
            .await;
        match committed {
            Ok(_) => {
                self.commits_since_compaction += 1;
                let mut log = AlertLog::clone(&self.log);
                log.seq = Some(seq);
                for record in records {
                    log.apply(record);
                }
                self.log = Arc::new(log);
                Ok(true)
            }
            Err(LakeError::Fenced(_)) => {
                self.reload().await?;
                Ok(false)
            }
            Err(other) => Err(other.into()),
        }
    }
}

impl AlertStore {
    /// Compacts the table once this process has committed
    /// [`COMPACT_AFTER_COMMITS`] times since it last tried (or just opened
    /// it) and the table has as many files; see [`AlertStore::compact`].
    pub async fn compact_when_due(&mut self) -> Result<Option<LogCompaction>, QueryError> {
        if self.commits_since_compaction < COMPACT_AFTER_COMMITS {
            return Ok(None);
        }
        self.commits_since_compaction = 0;
        self.compact(COMPACT_AFTER_COMMITS).await
    }

    /// Merges the table's files into one when it has at least `min_files`,
    /// in a commit fenced on the sequence number read, which it moves on
    /// (`allot_lake::compact::log_table`): the rows, and so the log, stay
    /// the same. `None`: too few files, or another process committed first
    /// (the log is read again; the next compaction will do).
    pub async fn compact(&mut self, min_files: usize) -> Result<Option<LogCompaction>, QueryError> {
        let Some(read) = self.log.seq else {
            return Ok(None);
        };
        let next = read + 1;
        let compacted = compact_log_table(
            &self.location,
            LakeTable::Alerts,
            &mut self.appender,
            AppOffset::new(ALERTS_APP_ID, next),
            &[(ALERTS_APP_ID.to_string(), Some(read))],
            min_files,
        )
        .await;
        match compacted {
            Ok(Some(done)) => {
                let mut log = AlertLog::clone(&self.log);
                log.seq = Some(next);
                self.log = Arc::new(log);
                Ok(Some(done))
            }
            Ok(None) => Ok(None),
            Err(LakeError::Fenced(_)) => {
                self.reload().await?;
                Ok(None)
            }
            Err(other) => Err(other.into()),
        }
    }
}

fn string_column(values: impl IntoIterator<Item = Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

/// The rows of one commit.
fn batch_of(seq: i64, records: &[AlertRecord]) -> Result<RecordBatch, QueryError> {
    let mut kinds = Vec::new();
    let mut keys = Vec::new();
    let mut rules = Vec::new();
    let mut tenants = Vec::new();
    let mut channels = Vec::new();
    let mut times = Vec::new();
    let mut details = Vec::new();
    for record in records {
        let (kind, key, rule, tenant, channel, at, detail) = match record {
            AlertRecord::Notice(n) => (
                "notice",
                n.key.clone(),
                n.rule.clone(),
                n.tenant_id.clone(),
                None,
                n.recorded_at,
                serde_json::to_string(&NoticeDetails {
                    body: n.body.clone(),
                    channels: n.channels.clone(),
                    number: n.number,
                    state: n.state.as_str().to_string(),
                })?,
            ),
            AlertRecord::Claim {
                key,
                channel,
                details,
                at,
            }
            | AlertRecord::Attempt {
                key,
                channel,
                details,
                at,
            } => (
                if matches!(record, AlertRecord::Claim { .. }) {
                    "claim"
                } else {
                    "attempt"
                },
                key.clone(),
                String::new(),
                String::new(),
                Some(channel.clone()),
                *at,
                serde_json::to_string(details)?,
            ),
        };
        kinds.push(Some(kind.to_string()));
        keys.push(Some(key));
        rules.push(Some(rule));
        tenants.push(Some(tenant));
        channels.push(channel);
        times.push(Some(format_micros(at)));
        details.push(Some(detail));
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![seq; records.len()])),
        string_column(kinds),
        string_column(keys),
        string_column(rules),
        string_column(tenants),
        string_column(channels),
        string_column(times),
        string_column(details),
    ];
    RecordBatch::try_new(alerts_schema(), columns).map_err(QueryError::from)
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, QueryError> {
    batch
        .column_by_name(name)
        .ok_or_else(|| QueryError::Stored(format!("alerts: column {name} is missing")))
}

fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray, QueryError> {
    let cast = arrow::compute::cast(column(batch, name)?, &DataType::Utf8)?;
    Ok(cast.as_string::<i32>().clone())
}

fn stored(message: impl std::fmt::Display) -> QueryError {
    QueryError::Stored(format!("alerts: {message}"))
}

/// Parses an RFC 3339 instant to UTC microseconds.
fn parse_instant(text: &str) -> Result<i64, QueryError> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|e| stored(format!("instant {text:?}: {e}")))
}

/// The records of one stored batch, in order: (seq, record).
fn records_of(batch: &RecordBatch) -> Result<Vec<(i64, AlertRecord)>, QueryError> {
    let seq = arrow::compute::cast(column(batch, "seq")?, &DataType::Int64)?;
    let seq = seq.as_primitive::<Int64Type>();
    let [kind, key, rule, tenant, channel, at, details] = [
        "record",
        "key",
        "rule",
        "tenant_id",
        "channel",
        "recorded_at",
        "details",
    ]
    .map(|name| strings(batch, name));
    let (kind, key, rule, tenant, channel, at, details) =
        (kind?, key?, rule?, tenant?, channel?, at?, details?);
    let mut records = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let recorded_at = parse_instant(at.value(row))?;
        let channel_name = || {
            channel
                .is_valid(row)
                .then(|| channel.value(row).to_string())
                .ok_or_else(|| stored("a claim or attempt without its channel"))
        };
        let record = match kind.value(row) {
            "notice" => {
                let parsed: NoticeDetails =
                    serde_json::from_str(details.value(row)).map_err(stored)?;
                AlertRecord::Notice(Notice {
                    key: key.value(row).to_string(),
                    rule: rule.value(row).to_string(),
                    tenant_id: tenant.value(row).to_string(),
                    state: AlertState::parse(&parsed.state)
                        .ok_or_else(|| stored(format!("state {:?}", parsed.state)))?,
                    number: parsed.number,
                    body: parsed.body,
                    channels: parsed.channels,
                    recorded_at,
                })
            }
            "claim" => AlertRecord::Claim {
                key: key.value(row).to_string(),
                channel: channel_name()?,
                details: serde_json::from_str(details.value(row)).map_err(stored)?,
                at: recorded_at,
            },
            "attempt" => AlertRecord::Attempt {
                key: key.value(row).to_string(),
                channel: channel_name()?,
                details: serde_json::from_str(details.value(row)).map_err(stored)?,
                at: recorded_at,
            },
            other => return Err(stored(format!("unknown record {other:?}"))),
        };
        records.push((seq.value(row), record));
    }
    Ok(records)
}
