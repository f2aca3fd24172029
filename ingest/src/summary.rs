//! The running totals of an ingest run and its one-line summary.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use allot_schemas::reason::ReasonCode;

use allot_schemas::layout::TenantDay;

use crate::stages::StageTimes;
use crate::writer::AppendOutcome;

/// Totals of an ingest run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestSummary {
    /// Events written to `usage_events`.
    pub accepted: u64,
    /// Events skipped because their `(tenant_id, event_id)` was already in the lake.
    pub duplicates: u64,
    /// Rejected events, by reason (including those already recorded by an earlier run).
    pub rejected_by_reason: BTreeMap<ReasonCode, u64>,
    /// Rejections not written again because an earlier run recorded them.
    pub rejected_already_recorded: u64,
    /// Blank lines skipped.
    pub blank_lines: u64,
    /// Tenant-day partitions that received events.
    pub partitions: BTreeSet<TenantDay>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Time per stage of the run (`allot ingest --stats`).
    pub stages: StageTimes,
}

impl IngestSummary {
    /// Adds what one append did.
    pub fn add(&mut self, outcome: AppendOutcome) {
        self.accepted += outcome.written;
        self.duplicates += outcome.duplicates;
        for (reason, count) in outcome.rejected_by_reason {
            *self.rejected_by_reason.entry(reason).or_default() += count;
        }
        self.rejected_already_recorded += outcome.rejected_duplicates;
        self.blank_lines += outcome.blank_lines;
        self.partitions.extend(outcome.partitions);
    }

    /// All rejected events.
    pub fn rejected(&self) -> u64 {
        self.rejected_by_reason.values().sum()
    }

    /// Events read (accepted, duplicate or rejected).
    pub fn events_read(&self) -> u64 {
        self.accepted + self.duplicates + self.rejected()
    }

    /// Events read per second of wall time.
    pub fn events_per_second(&self) -> u64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            (self.events_read() as f64 / secs) as u64
        } else {
            0
        }
    }
}

impl fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} accepted, {} duplicates skipped, {} rejected",
            self.accepted,
            self.duplicates,
            self.rejected()
        )?;
        if !self.rejected_by_reason.is_empty() {
            let reasons: Vec<String> = self
                .rejected_by_reason
                .iter()
                .map(|(reason, count)| format!("{reason} {count}"))
                .collect();
            write!(f, " ({})", reasons.join(", "))?;
        }
        if self.rejected_already_recorded > 0 {
            write!(
                f,
                ", {} rejections already recorded",
                self.rejected_already_recorded
            )?;
        }
        write!(
            f,
            ", {} blank lines, {} partitions touched, {:.1} s, {} events/s",
            self.blank_lines,
            self.partitions.len(),
            self.elapsed.as_secs_f64(),
            self.events_per_second()
        )
    }
}
