//! The query crate's error type: one enum whose variants carry what a person
//! needs to fix the problem (the tenant and metric, the costs-file row, the key).

/// Everything that can go wrong while computing a report.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A billing period that is not a `YYYY-MM` month.
    #[error("invalid period {text:?}: {reason}")]
    InvalidPeriod {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tenant used a metric in a stretch of time that no rate covers.
    #[error("tenant {tenant} used {metric} from {from} but no rate (global or tenant) covers it")]
    NoRate {
        /// The tenant billed.
        tenant: String,
        /// The metric without a rate.
        metric: String,
        /// The start of the uncovered segment, RFC 3339 UTC.
        from: String,
    },
    /// Usage of a metric that is not in the catalog.
    #[error("tenant {tenant} has usage of {metric}, which is not a metric of the catalog")]
    UnknownMetric {
        /// The tenant whose usage it is.
        tenant: String,
        /// The unknown metric.
        metric: String,
    },
    /// Usage of the wrong shape for its metric (counter sums for a gauge, samples
    /// for a counter, …).
    #[error("tenant {tenant}: {metric} is a {kind} metric, but {problem}")]
    WrongMetricKind {
        /// The tenant whose usage it is.
        tenant: String,
        /// The metric.
        metric: String,
        /// The metric's kind (`counter`, `gauge`, `max`, …).
        kind: &'static str,
        /// What was given instead.
        problem: &'static str,
    },
    /// A row of a shared-costs CSV that cannot be used.
    #[error("costs file row {row}: {problem}")]
    Costs {
        /// The 1-based line number in the file (the header is row 1).
        row: usize,
        /// What is wrong with the row.
        problem: String,
    },
    /// Report inputs that break a precondition, e.g. a bucket not aligned to the range.
    #[error("invalid report input: {0}")]
    InvalidInput(String),
    /// Reading the lake failed (no lake yet, an unreadable table or file, the
    /// engine over the lake's files).
    #[error(transparent)]
    Lake(#[from] allot_lake::LakeError),
    /// The query engine failed while planning or running a query.
    #[error("query engine error: {0}")]
    Engine(#[from] datafusion::error::DataFusionError),
    /// Building or reading an Arrow batch failed.
    #[error("query engine error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding a closing's parts (offsets, certificate) as JSON failed.
    #[error("encoding a closing as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored row of the lake (a closing, a billed invoice, an export column)
    /// that does not have the shape allot wrote.
    #[error("the lake holds a row allot cannot read: {0}")]
    Stored(String),
    /// A SQL text that the sandbox refuses (docs/reference.md#security-model); the message
    /// says why.
    #[error("{0}")]
    SqlRejected(String),
    /// A SQL query that needed more memory than its cap.
    #[error("the query needs more than the memory limit of {limit} for one query")]
    MemoryLimit {
        /// The cap, human readable (`512MiB`).
        limit: String,
    },
    /// A SQL query that ran past its time limit.
    #[error("the query ran past the time limit of {limit}")]
    TimeLimit {
        /// The limit, human readable (`30s`).
        limit: String,
    },
    /// A SQL result whose values, as text, are larger than the cap.
    #[error(
        "the result is larger than {limit}; select fewer or shorter columns, add a LIMIT or aggregate"
    )]
    ResultTooLarge {
        /// The cap, human readable (`64 MiB`).
        limit: String,
    },
    /// A SQL result with more rows than the cap.
    #[error("the result has more than {max_rows} rows; add a LIMIT or aggregate")]
    RowLimit {
        /// The cap.
        max_rows: usize,
    },
}

impl QueryError {
    /// Whether the error is the caller's fault (bad input, exit status 2 / HTTP 400)
    /// rather than a failure of allot or the lake.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            QueryError::InvalidPeriod { .. }
                | QueryError::Costs { .. }
                | QueryError::InvalidInput(_)
                | QueryError::SqlRejected(_)
                | QueryError::MemoryLimit { .. }
                | QueryError::TimeLimit { .. }
                | QueryError::RowLimit { .. }
                | QueryError::ResultTooLarge { .. }
        )
    }
}
