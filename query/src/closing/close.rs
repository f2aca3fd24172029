//! Closing a month, whole: the rules a close follows before it plans and
//! commits, so the CLI (and any other front end) only parses and prints.
//!
//! - A month can be closed once it has ended.
//! - A first close writes revision 0; closing a closed month again needs a
//!   restatement (with a reason), which writes the next revision; restating a
//!   month never closed is refused.
//! - The adjustments of late events are taken against the closing of the month
//!   before, when there is one.
//! - Credit is drawn against the balances the invoices of earlier months
//!   left ([`crate::credits::ledger`]), and frozen with the invoices.
//! - The certificate records the `txn` offset of every writer that committed
//!   to `usage_events`, as the log holds them at the version read: each
//!   collector's app id names its own consumer group, wherever that group was
//!   set; compaction's fence (a clock, not an offset) is left out.

use allot_lake::compact::COMPACTION_APP_ID;
use allot_lake::snapshot::LakeSnapshot;
use allot_lake::txns::recorded_txns;
use allot_schemas::config::Config;
use allot_schemas::layout::{LakeLocation, LakeTable};

use super::commit::commit_closing;
use super::ledger::drawn_before;
use super::plan::{ClosePlan, CloseRequest, plan_close};
use super::store::{PreviousClose, closings, find_closing};
use crate::allocation::CostPool;
use crate::error::QueryError;
use crate::period::{Period, format_micros};
use crate::reports::ReportSettings;

/// What `allot close` asks for.
pub struct CloseMonth<'a> {
    /// The month.
    pub month: Period,
    /// Write a new revision of a closed month, for this reason.
    pub restate: Option<String>,
    /// Who closes.
    pub who: String,
    /// The costs file's text and its pools, to freeze the allocation.
    pub costs: Option<(String, Vec<CostPool>)>,
    /// The configuration the figures are computed with.
    pub config: &'a Config,
    /// Now, in microseconds since the epoch.
    pub now_micros: i64,
}

/// Closes `request.month` on `location` as read in `snapshot` (see the module
/// docs for the rules) and returns what was committed. A month that has not
/// ended, a second close without a restatement and a restatement of an open
/// month are [`QueryError::InvalidInput`], and so is a close beaten to its
/// revision by a concurrent one.
pub async fn close_month(
    location: &LakeLocation,
    snapshot: &LakeSnapshot,
    request: CloseMonth<'_>,
) -> Result<ClosePlan, QueryError> {
    let period = request.month;
    if request.now_micros < period.end_micros() {
        return Err(QueryError::InvalidInput(format!(
            "--month {period} has not ended yet (it ends at {})",
            format_micros(period.end_micros())
        )));
    }
    let all = closings(location).await?;
    let revision = match (find_closing(&all, period, None), &request.restate) {
        (Some(closed), None) => {
            return Err(QueryError::InvalidInput(format!(
                "{period} is already closed (revision {}, {}); use --restate --reason TEXT",
                closed.revision, closed.closed_at
            )));
        }
        (None, Some(_)) => {
            return Err(QueryError::InvalidInput(format!(
                "--restate: {period} is not closed yet; close it first"
            )));
        }
        (Some(closed), Some(_)) => closed.revision + 1,
        (None, None) => 0,
    };
    let previous = match find_closing(&all, period.prev(), None) {
        Some(closed) => Some(PreviousClose::load(location, closed).await?),
        None => None,
    };
    let mut txn_offsets = match snapshot.usage.version {
        Some(version) => recorded_txns(location, LakeTable::UsageEvents, version).await?,
        None => Default::default(),
    };
    txn_offsets.remove(COMPACTION_APP_ID);
    let settings = ReportSettings::new(request.config.clone());
    let credits_drawn = drawn_before(location, snapshot, &settings, period, None).await?;
    let now = request.now_micros;
    let plan = plan_close(
        snapshot,
        CloseRequest {
            month: period,
            revision,
            close_id: format!("{period}-r{revision}-{now}"),
            closed_at: format_micros(now),
            who: request.who,
            reason: request.restate,
            config: request.config,
            costs: request.costs,
            previous: previous.as_ref(),
            txn_offsets,
            credits_drawn: &credits_drawn,
        },
    )
    .await?;
    commit_closing(location, &plan).await.map_err(|e| match e {
        QueryError::Lake(allot_lake::LakeError::Fenced(_)) => QueryError::InvalidInput(format!(
            "{period} revision {revision} was closed by another close meanwhile"
        )),
        other => other,
    })?;
    Ok(plan)
}
