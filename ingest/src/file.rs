//! Backfills from JSON Lines files (`allot ingest --from-file PATH|-`).
//!
//! A reader thread splits the input into bounded lines and decodes them into
//! batches while the async side writes the previous batch to the lake, so the two
//! cores of a small machine both work. Two batches are in memory at most (the one
//! being written and the one being decoded), so memory does not grow with the file.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use allot_lake::dedup::DedupWindow;
use allot_schemas::clock::{Clock, SystemClock};
use allot_schemas::config::Config;
use allot_schemas::layout::{LakeLocation, Provenance};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::assemble::{DecodedBatch, EventAssembler};
use crate::error::IngestError;
use crate::lines::{BoundedLines, Line};
use crate::summary::IngestSummary;
use crate::writer::LakeWriter;

/// The input of a backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileInput {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    Path(PathBuf),
}

impl FileInput {
    /// Reads `-` as standard input and anything else as a path.
    pub fn from_arg(arg: &str) -> Self {
        if arg == "-" {
            FileInput::Stdin
        } else {
            FileInput::Path(PathBuf::from(arg))
        }
    }

    /// The name recorded in `source` (`file:<name>:<line>`).
    pub fn name(&self) -> String {
        match self {
            FileInput::Stdin => "-".to_string(),
            FileInput::Path(path) => path.display().to_string(),
        }
    }
}

/// What a backfill needs.
pub struct FileIngestOptions {
    /// The JSON Lines input.
    pub input: FileInput,
    /// The lake to write to.
    pub lake: LakeLocation,
    /// Catalog, limits and batch sizes.
    pub config: Config,
    /// Show a progress bar on stderr (only when stderr is a terminal).
    pub progress: bool,
    /// The clock used for `future_timestamp` checks and `ingested_at`.
    pub clock: Option<Arc<dyn Clock>>,
}

/// Reads the whole input into the lake and returns the totals.
pub async fn ingest_file(
    options: FileIngestOptions,
    cancel: CancellationToken,
) -> Result<IngestSummary, IngestError> {
    let started = Instant::now();
    let name = options.input.name();
    let (reader, len) = open_input(&options.input)?;
    let progress = progress_bar(options.progress, len);
    let flush_bytes =
        usize::try_from(options.config.ingest.backfill_flush_bytes.0).unwrap_or(usize::MAX);
    let mut writer = LakeWriter::for_backfill(
        &options.lake,
        DedupWindow::new(options.config.ingest.dedup_window.0),
        flush_bytes.saturating_mul(OPEN_BYTES_PER_FLUSH_BYTES),
    )
    .await?;

    let (sender, mut receiver) = mpsc::channel::<DecodedBatch>(1);
    let stages = writer.stages();
    let assembler = EventAssembler::new(
        &options.config,
        options.clock.unwrap_or_else(|| Arc::new(SystemClock)),
    )
    .with_stages(Arc::clone(&stages));
    let flush_rows = options.config.ingest.backfill_flush_rows;
    let reader_name = name.clone();
    let reader_progress = progress.clone();
    let reader_cancel = cancel.clone();
    let decoding = std::thread::Builder::new()
        .name("allot-decode".to_string())
        .spawn(move || {
            decode_lines(
                reader,
                &reader_name,
                assembler,
                Limits {
                    flush_rows,
                    flush_bytes,
                },
                &sender,
                &reader_progress,
                &reader_cancel,
            )
        })
        .map_err(|source| IngestError::Input {
            name: name.clone(),
            source,
        })?;

    let mut summary = IngestSummary::default();
    while let Some(batch) = receiver.recv().await {
        summary.add(writer.append(batch).await?);
    }
    decoding
        .join()
        .map_err(|_| IngestError::DecoderPanicked)??;
    // After a stop signal too: every batch handed over is committed (the
    // reader drops the one it was filling; a rerun adds its lines).
    summary.add(writer.finish().await?);
    progress.finish_and_clear();
    summary.elapsed = started.elapsed();
    summary.stages = stages.times();
    Ok(summary)
}

/// The budget of the tenant-days a backfill keeps open (their buffered Parquet
/// bytes), in units of `ingest.backfill_flush_bytes`: with the batch being decoded and
/// the one being written, a backfill's memory stays within about six batches.
const OPEN_BYTES_PER_FLUSH_BYTES: usize = 4;

/// When the reader thread hands a batch to the writer.
struct Limits {
    flush_rows: usize,
    flush_bytes: usize,
}

fn open_input(input: &FileInput) -> Result<(Box<dyn BufRead + Send>, Option<u64>), IngestError> {
    const BUFFER: usize = 1 << 20;
    match input {
        FileInput::Stdin => Ok((
            Box::new(BufReader::with_capacity(BUFFER, std::io::stdin())),
            None,
        )),
        FileInput::Path(path) => {
            let file = File::open(path).map_err(|source| IngestError::Input {
                name: input.name(),
                source,
            })?;
            let len = file.metadata().ok().map(|m| m.len());
            Ok((Box::new(BufReader::with_capacity(BUFFER, file)), len))
        }
    }
}

fn progress_bar(wanted: bool, len: Option<u64>) -> ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match len {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    }
}

/// The reader thread: lines → assembler → batches for the writer.
fn decode_lines(
    reader: Box<dyn BufRead + Send>,
    name: &str,
    mut assembler: EventAssembler,
    limits: Limits,
    sender: &mpsc::Sender<DecodedBatch>,
    progress: &ProgressBar,
    cancel: &CancellationToken,
) -> Result<(), IngestError> {
    let input_error = |source| IngestError::Input {
        name: name.to_string(),
        source,
    };
    let mut lines = BoundedLines::new(reader, assembler.max_event_bytes());
    let mut bytes_since_tick = 0u64;
    // A batch is decoded only once the writer has taken the previous one (its
    // slot is reserved first), so two batches are in memory at most: the one
    // being written and the one being decoded.
    let Some(mut slot) = reserve(sender) else {
        return Ok(());
    };
    while let Some((line_no, line)) = lines.next_line().map_err(input_error)? {
        let source = Provenance::File {
            name,
            line: line_no,
        };
        match line {
            Line::Complete(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => {
                bytes_since_tick += bytes.len() as u64 + 1;
                assembler.skip_blank();
            }
            Line::Complete(bytes) => {
                bytes_since_tick += bytes.len() as u64 + 1;
                assembler.push(bytes, source);
            }
            Line::Oversize { prefix, len } => {
                bytes_since_tick += len as u64 + 1;
                assembler.push_oversize(prefix, len, source);
            }
        }
        if assembler.buffered_rows() >= limits.flush_rows
            || assembler.buffered_bytes() >= limits.flush_bytes
        {
            progress.inc(std::mem::take(&mut bytes_since_tick));
            if cancel.is_cancelled() {
                return Ok(());
            }
            slot.send(assembler.take()?);
            let Some(next) = reserve(sender) else {
                return Ok(()); // the writer has gone
            };
            slot = next;
        }
    }
    progress.inc(bytes_since_tick);
    slot.send(assembler.take()?);
    Ok(())
}

/// Waits until the writer has taken the batch before (the channel holds one),
/// then reserves the channel for the next; `None` when the writer has gone.
fn reserve(sender: &mpsc::Sender<DecodedBatch>) -> Option<mpsc::Permit<'_, DecodedBatch>> {
    futures::executor::block_on(sender.reserve()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` with `flush_bytes` and a row limit that never flushes;
    /// the number of rejected rows of each batch handed over.
    fn rejected_per_batch(input: String, flush_bytes: usize) -> Vec<usize> {
        let config = Config::default();
        let assembler = EventAssembler::new(&config, Arc::new(SystemClock));
        let (sender, mut receiver) = mpsc::channel::<DecodedBatch>(1);
        let reader: Box<dyn BufRead + Send> = Box::new(std::io::Cursor::new(input.into_bytes()));
        let decoding = std::thread::spawn(move || {
            decode_lines(
                reader,
                "-",
                assembler,
                Limits {
                    flush_rows: usize::MAX,
                    flush_bytes,
                },
                &sender,
                &ProgressBar::hidden(),
                &CancellationToken::new(),
            )
        });
        let mut sizes = Vec::new();
        while let Some(batch) = receiver.blocking_recv() {
            sizes.push(batch.rejected.num_rows());
        }
        decoding.join().unwrap().unwrap();
        sizes
    }

    #[test]
    fn rejected_lines_flush_a_batch_like_accepted_ones() {
        // 100 lines of 4 KiB that are not JSON: 400 KiB of rejected rows.
        let bad = format!("{}\n", "x".repeat(4095));
        let sizes = rejected_per_batch(bad.repeat(100), 64 << 10);
        assert_eq!(sizes.iter().sum::<usize>(), 100);
        // Each batch holds about 64 KiB of them, not all 400 KiB.
        assert!(sizes.len() >= 6, "{sizes:?}");
        assert!(sizes.iter().all(|rows| *rows <= 16), "{sizes:?}");
    }
}
