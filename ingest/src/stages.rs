//! Where an ingest run spends its time, stage by stage (`allot ingest --stats`).
//!
//! Every source and its writer share one [`StageClock`]; each stage adds the
//! wall time a thread spent in it (waiting for a core included, when more
//! threads are busy than there are cores), so stages that run side by side
//! (decoding beside writing, one Parquet writer per core) add up to more than
//! the wall time, and their sum compares with the process's CPU time. Decoding and building are
//! interleaved event by event, so they are timed on one event in
//! [`SAMPLE_EVERY`] and scaled up: looking at the clock twice per event would
//! cost a tenth of the event.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One event in this many is timed to split decoding from building.
pub const SAMPLE_EVERY: u64 = 64;

/// A stage of the way from raw bytes to committed Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// JSON to a validated event.
    Decode,
    /// Arrow arrays: appending to the builders, finishing them, cutting the
    /// batch into tenant-days.
    Build,
    /// The duplicate check (with a backfill's reads of the lake's ids).
    Dedup,
    /// Parquet encoding of the tenant-days' rows.
    Encode,
    /// Closing the files: the last pages, the footers and the upload.
    Write,
    /// Delta commits (both tables).
    Commit,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 6] = [
        Stage::Decode,
        Stage::Build,
        Stage::Dedup,
        Stage::Encode,
        Stage::Write,
        Stage::Commit,
    ];

    /// The stage's name in `--stats` and the benchmark output.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Build => "build",
            Stage::Dedup => "dedup",
            Stage::Encode => "encode",
            Stage::Write => "write",
            Stage::Commit => "commit",
        }
    }
}

/// Time per stage, added to from any thread.
#[derive(Debug, Default)]
pub struct StageClock {
    nanos: [AtomicU64; Stage::ALL.len()],
}

impl StageClock {
    /// Adds `spent` to `stage`.
    pub fn add(&self, stage: Stage, spent: Duration) {
        let nanos = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        self.nanos[stage as usize].fetch_add(nanos, Ordering::Relaxed);
    }

    /// Runs `work`, adding its time to `stage`.
    pub fn time<T>(&self, stage: Stage, work: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = work();
        self.add(stage, started.elapsed());
        result
    }

    /// The times so far.
    pub fn times(&self) -> StageTimes {
        StageTimes {
            by_stage: std::array::from_fn(|i| {
                Duration::from_nanos(self.nanos[i].load(Ordering::Relaxed))
            }),
        }
    }
}

/// A snapshot of a [`StageClock`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StageTimes {
    /// Time per stage, indexed like [`Stage::ALL`].
    pub by_stage: [Duration; Stage::ALL.len()],
}

impl StageTimes {
    /// The time spent in `stage`.
    pub fn of(&self, stage: Stage) -> Duration {
        self.by_stage[stage as usize]
    }

    /// The sum over the stages.
    pub fn total(&self) -> Duration {
        self.by_stage.iter().sum()
    }
}

/// The stage table of `allot ingest --stats`: per stage, its seconds, its
/// microseconds per event read and its share of the stages' sum; then the
/// process's CPU time, for comparison.
pub struct StageReport<'a> {
    /// The run's stage times.
    pub times: &'a StageTimes,
    /// Events read in the run.
    pub events: u64,
    /// The process's CPU time (user and system), when known.
    pub process_cpu: Option<Duration>,
}

impl fmt::Display for StageReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let events = self.events.max(1) as f64;
        let total = self.times.total().as_secs_f64();
        writeln!(f, "stage      seconds  µs/event  share")?;
        let mut row = |name: &str, spent: Duration| {
            let secs = spent.as_secs_f64();
            let share = if total > 0.0 {
                secs / total * 100.0
            } else {
                0.0
            };
            writeln!(
                f,
                "{name:<8} {secs:>9.3} {:>9.3} {share:>5.1}%",
                secs * 1e6 / events
            )
        };
        for stage in Stage::ALL {
            row(stage.name(), self.times.of(stage))?;
        }
        row("stages", self.times.total())?;
        if let Some(cpu) = self.process_cpu {
            let secs = cpu.as_secs_f64();
            write!(
                f,
                "process CPU {secs:.3} s, {:.3} µs/event",
                secs * 1e6 / events
            )?;
        }
        Ok(())
    }
}

/// The CPU time (user and system) this process has used, from
/// `/proc/self/stat`; `None` where there is no such file.
pub fn process_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields start after its last ')'.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // utime and stime (fields 14 and 15 of proc(5)), in clock ticks of 1/100 s.
    let total = ticks(11)?.checked_add(ticks(12)?)?;
    Some(Duration::from_millis(total.saturating_mul(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_time_per_stage_and_reports_it_per_event() {
        let clock = StageClock::default();
        clock.add(Stage::Decode, Duration::from_millis(3));
        clock.add(Stage::Decode, Duration::from_millis(1));
        clock.add(Stage::Commit, Duration::from_millis(4));
        let times = clock.times();
        assert_eq!(times.of(Stage::Decode), Duration::from_millis(4));
        assert_eq!(times.total(), Duration::from_millis(8));
        let report = StageReport {
            times: &times,
            events: 1_000,
            process_cpu: Some(Duration::from_millis(10)),
        }
        .to_string();
        assert!(
            report.contains("decode       0.004     4.000  50.0%"),
            "{report}"
        );
        assert!(
            report.contains("commit       0.004     4.000  50.0%"),
            "{report}"
        );
        assert!(
            report.ends_with("process CPU 0.010 s, 10.000 µs/event"),
            "{report}"
        );
    }

    #[test]
    fn reads_the_process_cpu_time() {
        // Busy work moves the reading forward (within a generous wall time).
        let before = process_cpu_time().expect("Linux has /proc/self/stat");
        let started = Instant::now();
        let mut spin = 0u64;
        let mut now = before;
        while now < before + Duration::from_millis(30)
            && started.elapsed() < Duration::from_secs(20)
        {
            for _ in 0..100_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
            now = process_cpu_time().expect("Linux has /proc/self/stat");
        }
        assert!(
            now >= before + Duration::from_millis(30),
            "{before:?} → {now:?}"
        );
    }
}
