//! The pool SQL queries run on, apart from whatever serves requests.
//!
//! A query's parse, plan, optimisation and execution are CPU work that does not
//! yield (constant folding, an optimiser pass over a large expression), and
//! DataFusion's planner recurses over the statement. Run on a request
//! runtime's workers, a heavy query stalls every other route, and a deep one
//! overflows a worker's stack and aborts the process. So [`SqlPool`] is its own
//! Tokio runtime: a few worker threads with large stacks, admitting as many
//! queries at once as it has workers (the others wait, and their wait counts
//! against their time limit). The caller awaits the answer from its own
//! runtime; at the time limit, or when the caller stops waiting, the query's
//! task is aborted, which drops its plan and streams and so stops the
//! engine's work at its next await point.

use std::future::Future;
use std::sync::Arc;

use allot_lake::session::Scope;
use allot_lake::snapshot::LakeSnapshot;
use datafusion::error::DataFusionError;
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{SqlLimits, SqlOutput, execute};
use crate::error::QueryError;

/// The stack of each of the pool's threads. The statement check bounds how
/// deep the engine recurses; this leaves it a wide margin.
pub const SQL_THREAD_STACK: usize = 64 << 20;

/// A dedicated, bounded runtime for SQL queries.
pub struct SqlPool {
    runtime: Option<Runtime>,
    admission: Arc<Semaphore>,
    threads: usize,
}

impl std::fmt::Debug for SqlPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlPool")
            .field("threads", &self.threads)
            .finish()
    }
}

impl SqlPool {
    /// The default size: one thread per core, at least 2 and at most 8.
    pub fn default_threads() -> usize {
        std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, 8)
    }

    /// A pool of `threads` worker threads (at least 1), running at most that
    /// many queries at once.
    pub fn new(threads: usize) -> Result<SqlPool, QueryError> {
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .max_blocking_threads(threads * 4)
            .thread_stack_size(SQL_THREAD_STACK)
            .thread_name("allot-sql")
            .enable_all()
            .build()
            .map_err(|e| QueryError::Engine(DataFusionError::IoError(e)))?;
        Ok(SqlPool {
            runtime: Some(runtime),
            admission: Arc::new(Semaphore::new(threads)),
            threads,
        })
    }

    /// How many queries may run at once.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `sql` over `snapshot` within `scope` and `limits` on the pool; the
    /// time limit runs from this call.
    pub async fn run(
        &self,
        snapshot: Arc<LakeSnapshot>,
        scope: Scope,
        sql: String,
        limits: SqlLimits,
    ) -> Result<SqlOutput, QueryError> {
        let deadline = Instant::now() + limits.timeout;
        let limit = format!("{} s", limits.timeout.as_secs_f64());
        let time_limit = || QueryError::TimeLimit {
            limit: limit.clone(),
        };
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.admission).acquire_owned())
            .await
            .map_err(|_| time_limit())?
            .map_err(|_| {
                QueryError::Engine(DataFusionError::Internal("the SQL pool has stopped".into()))
            })?;
        let work = async move {
            let _permit = permit;
            execute(&snapshot, &scope, &sql, &limits, deadline.into_std()).await
        };
        let task = AbortOnDrop(self.spawn(work));
        match tokio::time::timeout_at(deadline, task).await {
            Ok(result) => result,
            Err(_) => Err(time_limit()),
        }
    }

    fn spawn<F>(&self, work: F) -> JoinHandle<Result<SqlOutput, QueryError>>
    where
        F: Future<Output = Result<SqlOutput, QueryError>> + Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the pool")
            .spawn(work)
    }
}

impl Drop for SqlPool {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside another one.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A task aborted when nobody waits for it any more.
struct AbortOnDrop(JoinHandle<Result<SqlOutput, QueryError>>);

impl Future for AbortOnDrop {
    type Output = Result<SqlOutput, QueryError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|error| {
                Err(QueryError::Engine(DataFusionError::Internal(format!(
                    "the query's task failed: {error}"
                ))))
            })
        })
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
