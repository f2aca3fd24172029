//! Turning raw events into lake batches: decode, validate, append to builders.
//!
//! [`EventAssembler`] is the part of the pipeline every source shares (files and
//! Kafka alike): raw bytes and their provenance go in, [`DecodedBatch`]es of
//! accepted and rejected rows come out. It is synchronous and does no I/O, so a
//! source can run it on its own thread beside the writer.

use std::collections::BTreeMap;

use std::sync::Arc;
use std::time::{Duration, Instant};

use allot_schemas::clock::Clock;
use allot_schemas::config::{Config, MetricCatalog};
use allot_schemas::event::{DecodeContext, Rejection, decode_event, oversize_rejection};
use allot_schemas::layout::Provenance;
use allot_schemas::reason::ReasonCode;
use arrow::array::RecordBatch;
use arrow::error::ArrowError;

use crate::batch::{RejectedBatchBuilder, UsageBatchBuilder};
use crate::stages::{SAMPLE_EVERY, Stage, StageClock};

/// Accepted and rejected rows ready to be written, with what was counted.
pub struct DecodedBatch {
    /// Rows for `usage_events` (duplicates not yet removed).
    pub usage: RecordBatch,
    /// Rows for `rejected_events`.
    pub rejected: RecordBatch,
    /// Rejections in this batch, by reason.
    pub rejected_by_reason: BTreeMap<ReasonCode, u64>,
    /// Blank lines skipped.
    pub blank_lines: u64,
}

/// Decodes raw events into batches.
pub struct EventAssembler {
    catalog: MetricCatalog,
    max_future_skew_micros: i64,
    max_event_bytes: usize,
    clock: Arc<dyn Clock>,
    /// The clock's reading the events are checked against, taken at the first
    /// event after a [`refresh_clock`](Self::refresh_clock) or a
    /// [`take`](Self::take): one read per batch, not per event.
    now_micros: Option<i64>,
    usage: UsageBatchBuilder,
    rejected: RejectedBatchBuilder,
    rejected_by_reason: BTreeMap<ReasonCode, u64>,
    blank_lines: u64,
    stages: Arc<StageClock>,
    timing: DecodeTiming,
}

/// The sampled split of an assembler's time between decoding and building,
/// since the last [`EventAssembler::take`].
#[derive(Default)]
struct DecodeTiming {
    pushed: u64,
    sampled: u64,
    decode: Duration,
    build: Duration,
}

impl DecodeTiming {
    /// Adds the sampled times, scaled to every event pushed, to `stages`.
    fn report(&mut self, stages: &StageClock) {
        let timing = std::mem::take(self);
        if timing.sampled == 0 {
            return;
        }
        let scale = |spent: Duration| {
            let nanos = spent.as_nanos() * u128::from(timing.pushed) / u128::from(timing.sampled);
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        };
        stages.add(Stage::Decode, scale(timing.decode));
        stages.add(Stage::Build, scale(timing.build));
    }
}

impl EventAssembler {
    /// An assembler validating with the catalog and limits of `config`.
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Self {
        EventAssembler {
            catalog: config.catalog(),
            max_future_skew_micros: i64::try_from(config.ingest.max_future_skew.0.as_micros())
                .unwrap_or(i64::MAX),
            max_event_bytes: usize::try_from(config.ingest.max_event_bytes.0).unwrap_or(usize::MAX),
            clock,
            now_micros: None,
            usage: UsageBatchBuilder::default(),
            rejected: RejectedBatchBuilder::default(),
            rejected_by_reason: BTreeMap::new(),
            blank_lines: 0,
            stages: Arc::default(),
            timing: DecodeTiming::default(),
        }
    }

    /// Reports the time spent decoding and building batches to `stages`.
    pub fn with_stages(mut self, stages: Arc<StageClock>) -> Self {
        self.stages = stages;
        self
    }

    /// The largest event accepted, in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Makes the next event read the clock again; a source calls it as often as
    /// the `future_timestamp` check must follow the clock (a collector does
    /// every few hundred messages).
    pub fn refresh_clock(&mut self) {
        self.now_micros = None;
    }

    /// Decodes one event and buffers it as accepted or rejected; returns the
    /// rejection, if any, so a source can also dead-letter the event.
    pub fn push(&mut self, raw: &[u8], source: Provenance<'_>) -> Option<Rejection> {
        let clock = &self.clock;
        let now_micros = *self.now_micros.get_or_insert_with(|| clock.now_micros());
        let ctx = DecodeContext {
            catalog: &self.catalog,
            now_micros,
            max_future_skew_micros: self.max_future_skew_micros,
            max_event_bytes: self.max_event_bytes,
        };
        // One event in SAMPLE_EVERY (the first included) is timed.
        self.timing.pushed += 1;
        let started = (self.timing.pushed % SAMPLE_EVERY == 1).then(Instant::now);
        let decoded = decode_event(raw, &ctx);
        let decoded_at = started.map(|started| (started, Instant::now()));
        let rejection = match decoded {
            Ok(event) => {
                self.usage.append(&event, source);
                None
            }
            Err(rejection) => {
                self.reject(&rejection, raw, raw.len(), source);
                Some(rejection)
            }
        };
        if let Some((started, decoded_at)) = decoded_at {
            self.timing.sampled += 1;
            self.timing.decode += decoded_at - started;
            self.timing.build += decoded_at.elapsed();
        }
        rejection
    }

    /// Buffers a rejection for an event too large to be read whole;
    /// `prefix` is its first bytes and `len` its full length.
    pub fn push_oversize(&mut self, prefix: &[u8], len: usize, source: Provenance<'_>) {
        let rejection = oversize_rejection(len, self.max_event_bytes);
        self.reject(&rejection, prefix, len, source);
    }

    /// Counts a blank line, which is skipped.
    pub fn skip_blank(&mut self) {
        self.blank_lines += 1;
    }

    fn reject(&mut self, rejection: &Rejection, raw: &[u8], len: usize, source: Provenance<'_>) {
        *self.rejected_by_reason.entry(rejection.reason).or_default() += 1;
        self.rejected.append(rejection, raw, len, source);
    }

    /// Rows buffered (accepted and rejected).
    pub fn buffered_rows(&self) -> usize {
        self.usage.len() + self.rejected.len()
    }

    /// Approximate memory of the buffered rows, accepted and rejected: a batch
    /// flushes on it, so a run of rejected lines is bounded like good ones.
    pub fn buffered_bytes(&self) -> usize {
        self.usage.approx_bytes() + self.rejected.approx_bytes()
    }

    /// Takes everything buffered as one batch.
    pub fn take(&mut self) -> Result<DecodedBatch, ArrowError> {
        self.now_micros = None;
        self.timing.report(&self.stages);
        let now = self.clock.now_micros();
        let stages = Arc::clone(&self.stages);
        stages.time(Stage::Build, || -> Result<DecodedBatch, ArrowError> {
            Ok(DecodedBatch {
                usage: self.usage.finish(now)?,
                rejected: self.rejected.finish(now)?,
                rejected_by_reason: std::mem::take(&mut self.rejected_by_reason),
                blank_lines: std::mem::take(&mut self.blank_lines),
            })
        })
    }
}
