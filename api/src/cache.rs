//! The server's report cache (docs/reference.md#serving).
//!
//! An answer is kept under a key naming the report, its parameters, the format
//! and the stamp of what it was computed from ([`crate::lake_view::ServedLake::stamp`]):
//! a commit that changes what a report reads changes its key, so a cached answer
//! is never stale, and one that does not (another tenant's partitions) leaves
//! it in place. The configuration is fixed for the life of the process, so it
//! needs no place in the key: a new price book means a restart and an empty
//! cache.
//!
//! Besides rendered answers it keeps the all-tenant health table of an instant,
//! which every tenant's health answer is cut from: health needs every tenant's
//! usage anyway (noisy flags compare a tenant with all the others), so a
//! thousand tenants' dashboards at one refresh cost one computation.
//!
//! Entries are bounded by `api.cache_memory`; the least recently used go first.
//! Identical requests arriving while one is computing wait for that computation
//! instead of starting their own (single flight); each computation counts once
//! in [`REPORT_COMPUTATIONS`].

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use allot_query::health::TenantHealth;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::sync::OnceCell;

use crate::error::ApiError;

/// Reports computed (not answered from the cache), by report.
pub const REPORT_COMPUTATIONS: &str = "allot_report_computations_total";
/// Answers served from the cache, by report.
pub const REPORT_CACHE_HITS: &str = "allot_report_cache_hits_total";
/// Bytes held by the cache.
pub const REPORT_CACHE_BYTES: &str = "allot_report_cache_bytes";

/// What an entry costs beyond its body and key (the map slots, the answer's
/// header): counted so that many tiny answers still fill the bound.
const ENTRY_OVERHEAD: u64 = 256;

/// A successful answer, as bytes.
#[derive(Clone)]
struct CachedAnswer {
    content_type: Option<HeaderValue>,
    body: Bytes,
}

/// What an entry holds.
#[derive(Clone)]
enum Cached {
    /// A rendered answer.
    Answer(CachedAnswer),
    /// Every tenant's health at one instant.
    Health(Arc<Vec<TenantHealth>>),
}

impl Cached {
    /// Bytes it holds, approximately for health rows (their text and a fixed
    /// size per row and reason).
    fn bytes(&self) -> u64 {
        match self {
            Cached::Answer(answer) => answer.body.len() as u64,
            Cached::Health(rows) => rows
                .iter()
                .map(|row| {
                    let reasons: usize = row
                        .reasons
                        .iter()
                        .map(|reason| reason.message.len() + 64)
                        .sum();
                    (row.tenant_id.len() + reasons + 256 + 128 * row.quota_use.len()) as u64
                })
                .sum(),
        }
    }
}

impl CachedAnswer {
    fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        if let Some(content_type) = &self.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, content_type.clone());
        }
        response
    }
}

/// The report cache. See the module documentation.
pub struct ReportCache {
    capacity: u64,
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    slots: HashMap<String, Slot>,
    /// Completed entries by last use, oldest first.
    by_use: BTreeMap<u64, String>,
    /// The next use's number.
    clock: u64,
    /// Bytes of the completed entries.
    bytes: u64,
}

struct Slot {
    answer: Arc<OnceCell<Cached>>,
    /// Its last use, once completed (its place in `by_use`).
    used: Option<u64>,
    bytes: u64,
}

impl ReportCache {
    /// A cache holding at most `capacity` bytes of answers (0: answers are
    /// shared by concurrent requests only).
    pub fn new(capacity: u64) -> ReportCache {
        ReportCache {
            capacity,
            entries: Mutex::new(Entries::default()),
        }
    }

    /// The answer under `key`, computed by `compute` unless it is cached or
    /// being computed. Errors are not cached: the next request computes again.
    pub async fn answer(
        &self,
        report: &'static str,
        key: String,
        compute: impl Future<Output = Result<Response, ApiError>>,
    ) -> Result<Response, ApiError> {
        let key = format!("{report} {key}");
        // Reports are deep futures: on the heap, not on a worker's stack.
        let compute = Box::pin(compute);
        let cached = self
            .get_or_compute(report, key, async {
                Ok(Cached::Answer(CachedAnswer::read(compute.await?).await?))
            })
            .await?;
        match cached {
            Cached::Answer(answer) => Ok(answer.response()),
            Cached::Health(_) => Err(ApiError::Internal(format!(
                "the cache holds health rows under a {report} key"
            ))),
        }
    }

    /// Every tenant's health under `key`, computed by `compute` unless it is
    /// cached or being computed.
    pub async fn health_rows(
        &self,
        key: String,
        compute: impl Future<Output = Result<Arc<Vec<TenantHealth>>, ApiError>>,
    ) -> Result<Arc<Vec<TenantHealth>>, ApiError> {
        let report = "health_rows";
        let key = format!("{report} {key}");
        let compute = Box::pin(compute);
        let cached = self
            .get_or_compute(report, key, async { Ok(Cached::Health(compute.await?)) })
            .await?;
        match cached {
            Cached::Health(rows) => Ok(rows),
            Cached::Answer(_) => Err(ApiError::Internal(
                "the cache holds an answer under a health rows key".to_string(),
            )),
        }
    }

    async fn get_or_compute(
        &self,
        report: &'static str,
        key: String,
        compute: impl Future<Output = Result<Cached, ApiError>>,
    ) -> Result<Cached, ApiError> {
        let cell = self.lookup(&key);
        if let Some(cached) = cell.get() {
            metrics::counter!(REPORT_CACHE_HITS, "report" => report).increment(1);
            return Ok(cached.clone());
        }
        let mut computed = false;
        let outcome = cell
            .get_or_try_init(|| async {
                computed = true;
                metrics::counter!(REPORT_COMPUTATIONS, "report" => report).increment(1);
                compute.await
            })
            .await;
        match outcome {
            Ok(cached) => {
                if computed {
                    self.completed(&key, &cell, cached.bytes());
                } else {
                    metrics::counter!(REPORT_CACHE_HITS, "report" => report).increment(1);
                }
                Ok(cached.clone())
            }
            Err(error) => {
                self.forget_failed(&key, &cell);
                Err(error)
            }
        }
    }

    /// The cell of `key`, made when missing; marks a completed entry used.
    fn lookup(&self, key: &str) -> Arc<OnceCell<Cached>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = &mut *entries;
        entries.clock += 1;
        let now = entries.clock;
        match entries.slots.get_mut(key) {
            Some(slot) => {
                // An answer still being computed has no place in the order yet.
                if let Some(used) = slot.used {
                    entries.by_use.remove(&used);
                    entries.by_use.insert(now, key.to_string());
                    slot.used = Some(now);
                }
                Arc::clone(&slot.answer)
            }
            None => {
                let answer = Arc::new(OnceCell::new());
                entries.slots.insert(
                    key.to_string(),
                    Slot {
                        answer: Arc::clone(&answer),
                        used: None,
                        bytes: 0,
                    },
                );
                answer
            }
        }
    }

    /// Counts a computed answer in the bound and evicts the least recently used
    /// answers beyond it (this one too, if it alone is larger).
    fn completed(&self, key: &str, cell: &Arc<OnceCell<Cached>>, held_bytes: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = &mut *entries;
        entries.clock += 1;
        let now = entries.clock;
        let Some(slot) = entries.slots.get_mut(key) else {
            return;
        };
        if !Arc::ptr_eq(&slot.answer, cell) || slot.used.is_some() {
            return;
        }
        let bytes = held_bytes + key.len() as u64 + ENTRY_OVERHEAD;
        slot.used = Some(now);
        slot.bytes = bytes;
        entries.by_use.insert(now, key.to_string());
        entries.bytes += bytes;
        while entries.bytes > self.capacity {
            let Some((_, oldest)) = entries.by_use.pop_first() else {
                break;
            };
            if let Some(slot) = entries.slots.remove(&oldest) {
                entries.bytes -= slot.bytes;
            }
        }
        metrics::gauge!(REPORT_CACHE_BYTES).set(entries.bytes as f64);
    }

    /// Drops the entry of a computation that failed, unless another request
    /// has completed it since.
    fn forget_failed(&self, key: &str, cell: &Arc<OnceCell<Cached>>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries
            .slots
            .get(key)
            .is_some_and(|slot| Arc::ptr_eq(&slot.answer, cell) && slot.used.is_none())
            && !cell.initialized()
        {
            entries.slots.remove(key);
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }
}

impl CachedAnswer {
    /// Reads a handler's successful answer into bytes.
    async fn read(response: Response) -> Result<CachedAnswer, ApiError> {
        if response.status() != StatusCode::OK {
            return Err(ApiError::Internal(format!(
                "a report answered {} instead of a body",
                response.status()
            )));
        }
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .map_err(|e| ApiError::Internal(format!("reading a report's body: {e}")))?;
        Ok(CachedAnswer { content_type, body })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    async fn body(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// An answer of `size` bytes that takes a while, counting its runs.
    async fn slow(runs: &AtomicUsize, size: usize) -> Result<Response, ApiError> {
        runs.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Response::new(Body::from("x".repeat(size))))
    }

    #[tokio::test]
    async fn identical_concurrent_requests_share_one_computation() {
        // No memory at all: only the sharing of a computation in flight.
        let cache = Arc::new(ReportCache::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let requests: Vec<_> = (0..64)
            .map(|_| {
                let (cache, runs) = (Arc::clone(&cache), Arc::clone(&runs));
                tokio::spawn(async move {
                    let answer = cache.answer("test", "k".to_string(), slow(&runs, 3)).await;
                    body(answer.unwrap()).await
                })
            })
            .collect();
        for request in requests {
            assert_eq!(request.await.unwrap(), "xxx");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(cache.bytes(), 0, "nothing is kept without memory");
    }

    #[tokio::test]
    async fn the_least_recently_used_answers_leave_first() {
        let entry = |key: &str| 100 + format!("test {key}").len() as u64 + ENTRY_OVERHEAD;
        let cache = ReportCache::new(entry("a") * 2);
        let runs = AtomicUsize::new(0);
        for key in ["a", "b", "a", "c", "a", "b"] {
            let answer = cache.answer("test", key.to_string(), slow(&runs, 100));
            assert_eq!(body(answer.await.unwrap()).await.len(), 100);
        }
        // a, b computed; a hit; c computed and evicts b (a was used later);
        // a hit; b computed again and evicts c.
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        assert_eq!(cache.bytes(), entry("a") * 2);
    }

    #[tokio::test]
    async fn errors_are_not_kept() {
        let cache = ReportCache::new(1 << 20);
        let failed = cache
            .answer("test", "k".to_string(), async {
                Err(ApiError::Internal("the lake is away".to_string()))
            })
            .await;
        assert!(failed.is_err());
        let runs = AtomicUsize::new(0);
        let answer = cache.answer("test", "k".to_string(), slow(&runs, 2)).await;
        assert_eq!(body(answer.unwrap()).await, "xx");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
