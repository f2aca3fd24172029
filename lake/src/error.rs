//! The lake crate's error type: what can go wrong reading, writing or
//! maintaining the Delta tables, with the cause kept as the error's source.

use allot_schemas::layout::LakeLocationError;

/// Everything that can go wrong with the lake's tables.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The lake location is unusable.
    #[error(transparent)]
    Location(#[from] LakeLocationError),
    /// The lake has no `usage_events` table: nothing was ever ingested there.
    #[error("the lake has no usage_events table yet (run `allot ingest` first)")]
    NoLake,
    /// Nothing in the lake (nor the configuration) names the tenant, and no
    /// erasure of it is unfinished.
    #[error(
        "{0}: no such tenant (nothing of it in the lake, no unfinished erasure of it, no [tenants.{0}] in the config)"
    )]
    UnknownTenant(String),
    /// A Delta table operation failed.
    #[error("lake table {table}: {source}")]
    Table {
        /// The table.
        table: &'static str,
        /// The Delta error.
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// A Delta table holds something allot cannot read (a missing partition
    /// value, a log it cannot replay).
    #[error("cannot read the lake table {table}: {message}")]
    Unreadable {
        /// The table.
        table: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A stored `day` partition value outside the dates allot handles.
    #[error("day {0} (since 1970) is out of range")]
    DayOutOfRange(i32),
    /// Reading a data file of the lake failed.
    #[error("reading lake file {path}: {source}")]
    File {
        /// The file, relative to its table.
        path: String,
        /// The Parquet error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The query engine failed while planning or running a query over the lake.
    #[error("query engine error: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    /// Building or reading an Arrow batch failed.
    #[error("building a batch: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// The lake's object store URL cannot be used as a DataFusion store.
    #[error("the lake's store url: {0}")]
    StoreUrl(#[from] url::ParseError),
    /// Another writer recorded newer offsets (or a newer revision) for this commit.
    #[error("commit fenced: {0}")]
    Fenced(String),
    /// A background task stopped unexpectedly (it panicked or was cancelled).
    #[error("a worker stopped: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// A vacuum retention longer than time can count.
    #[error("vacuum retention: {0}")]
    Retention(#[from] chrono::OutOfRangeError),
    /// `usage_hourly` moved on while a refresh was starting.
    #[error(
        "refreshing usage_hourly: usage_hourly changed while the refresh started; trying again later"
    )]
    RollupRaced,
    /// A `unique_count` metric with more distinct values in one tenant's month
    /// (or one of its hours) than its `max_distinct`: counted exactly or not
    /// at all (docs/decisions/0033-meter-kinds.md).
    #[error(
        "tenant {tenant}: {metric} has more than {max_distinct} distinct values in the month, \
         its max_distinct; raise metrics.{metric}.max_distinct to bill it"
    )]
    TooManyDistinct {
        /// The tenant.
        tenant: String,
        /// The `unique_count` metric.
        metric: String,
        /// Its bound.
        max_distinct: u64,
    },
}

impl LakeError {
    /// Wraps a Delta error of `table`.
    pub fn table(table: &'static str) -> impl FnOnce(deltalake::DeltaTableError) -> LakeError {
        move |source| LakeError::Table { table, source }
    }
}
