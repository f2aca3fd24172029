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

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;

use super::{
    Described, SqlLimits, SqlOutput, SqlRequest, describe, execute, forward_capped, start,
};
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
        request: impl Into<SqlRequest>,
        limits: SqlLimits,
    ) -> Result<SqlOutput, QueryError> {
        let request = request.into();
        let deadline = Instant::now() + limits.timeout;
        let permit = self.admit(deadline, &limits).await?;
        let late = time_limit(&limits);
        let work = async move {
            let _permit = permit;
            execute(&snapshot, &scope, &request, &limits, deadline.into_std()).await
        };
        let task = AbortOnDrop(self.spawn(work));
        tokio::time::timeout_at(deadline, task)
            .await
            .unwrap_or_else(|_| Err(late))
    }

    /// The columns `sql` answers with over `snapshot` within `scope`, planned
    /// on the pool (planning is work a statement can make heavy) and not run.
    pub async fn schema(
        &self,
        snapshot: Arc<LakeSnapshot>,
        scope: Scope,
        request: impl Into<SqlRequest>,
        limits: SqlLimits,
    ) -> Result<SchemaRef, QueryError> {
        Ok(self
            .describe(snapshot, scope, request, limits)
            .await?
            .schema)
    }

    /// The columns `request` answers with and the types of its parameters,
    /// planned on the pool like [`schema`](Self::schema).
    pub async fn describe(
        &self,
        snapshot: Arc<LakeSnapshot>,
        scope: Scope,
        request: impl Into<SqlRequest>,
        limits: SqlLimits,
    ) -> Result<Described, QueryError> {
        let request = request.into();
        let deadline = Instant::now() + limits.timeout;
        let permit = self.admit(deadline, &limits).await?;
        let late = time_limit(&limits);
        let work = async move {
            let _permit = permit;
            describe(&snapshot, &scope, &request, &limits).await
        };
        let task = AbortOnDrop(self.spawn(work));
        tokio::time::timeout_at(deadline, task)
            .await
            .unwrap_or_else(|_| Err(late))
    }

    /// Runs `sql` like [`run`](Self::run), but hands its answer over as Arrow
    /// batches as the engine makes them, for the wire protocols: the pool's
    /// slot is held until the last batch is taken or the stream is dropped
    /// (which stops the query). The row and byte caps count what was sent.
    pub async fn stream(
        &self,
        snapshot: Arc<LakeSnapshot>,
        scope: Scope,
        request: impl Into<SqlRequest>,
        limits: SqlLimits,
    ) -> Result<SqlStream, QueryError> {
        let request = request.into();
        let deadline = Instant::now() + limits.timeout;
        let permit = self.admit(deadline, &limits).await?;
        // Two batches in flight: the engine works ahead of a slow reader by
        // that much and no more.
        let (sink, batches) = tokio::sync::mpsc::channel(2);
        let (started_tx, started) = tokio::sync::oneshot::channel();
        let late = time_limit(&limits);
        let work = async move {
            let stream =
                match start(&snapshot, &scope, &request, &limits, deadline.into_std()).await {
                    Ok(stream) => stream,
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                        return Ok(());
                    }
                };
            if started_tx.send(Ok(stream.schema())).is_err() {
                return Ok(());
            }
            let forwarded =
                tokio::time::timeout_at(deadline, forward_capped(stream, &limits, sink.clone()))
                    .await;
            // The query is over: its slot is free for the next, even while
            // a slow reader has yet to take the error below.
            drop(permit);
            if forwarded.is_err() {
                // Sent, not tried: an answer that just stopped would read as
                // complete.
                let _ = sink.send(Err(time_limit(&limits))).await;
            }
            Ok(())
        };
        let task = AbortOnDrop(self.spawn(work));
        let schema = match tokio::time::timeout_at(deadline, started).await {
            Ok(Ok(started)) => started?,
            Ok(Err(_)) => return Err(stopped()),
            Err(_) => return Err(late),
        };
        Ok(SqlStream {
            schema,
            batches,
            _task: task,
        })
    }

    /// Waits for a slot of the pool until `deadline`.
    async fn admit(
        &self,
        deadline: Instant,
        limits: &SqlLimits,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, QueryError> {
        tokio::time::timeout_at(deadline, Arc::clone(&self.admission).acquire_owned())
            .await
            .map_err(|_| time_limit(limits))?
            .map_err(|_| stopped())
    }

    fn spawn<F, T>(&self, work: F) -> JoinHandle<Result<T, QueryError>>
    where
        F: Future<Output = Result<T, QueryError>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("the runtime lives as long as the pool")
            .spawn(work)
    }
}

/// A query's answer as the engine makes it ([`SqlPool::stream`]): its columns,
/// then its batches; an error ends it. Dropping it stops the query.
pub struct SqlStream {
    /// The answer's columns.
    pub schema: SchemaRef,
    batches: tokio::sync::mpsc::Receiver<Result<RecordBatch, QueryError>>,
    _task: AbortOnDrop<()>,
}

impl std::fmt::Debug for SqlStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStream")
            .field("schema", &self.schema)
            .finish()
    }
}

impl futures::Stream for SqlStream {
    type Item = Result<RecordBatch, QueryError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.batches.poll_recv(cx)
    }
}

/// The error of a query past its time limit.
fn time_limit(limits: &SqlLimits) -> QueryError {
    QueryError::TimeLimit {
        limit: format!("{} s", limits.timeout.as_secs_f64()),
    }
}

/// The error of a query the pool can no longer run.
fn stopped() -> QueryError {
    QueryError::Engine(DataFusionError::Internal("the SQL pool has stopped".into()))
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
struct AbortOnDrop<T>(JoinHandle<Result<T, QueryError>>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, QueryError>;

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

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
