//! The query crate's error type: one enum whose variants carry what a person
//! needs to fix the problem (the tenant and metric, the costs-file row, the key).

/// Everything that can go wrong while computing a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// Usage of the wrong shape for its metric (counter sums for a gauge, or samples for a counter).
    #[error("tenant {tenant}: {metric} is a {kind} metric, but {problem}")]
    WrongMetricKind {
        /// The tenant whose usage it is.
        tenant: String,
        /// The metric.
        metric: String,
        /// `counter` or `gauge`.
        kind: &'static str,
        /// What was given instead.
        problem: &'static str,
    },
    /// A price-book entry that cannot be used (the config was not validated).
    #[error("price book key `{key}`: {message}")]
    InvalidPriceBook {
        /// The dotted config key, e.g. `tenants.acme.rates[0].effective_from`.
        key: String,
        /// What is wrong with it.
        message: String,
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
}
