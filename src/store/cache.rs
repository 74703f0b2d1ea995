//! A size-bounded in-memory cache of decoded datasets, shared by every job (and evaluation) that
//! reads the same dataset, so a job on a warm dataset starts without touching its files.
//!
//! Loads are single-flight: jobs that want the same cold dataset at once wait for one read instead
//! of each decoding its own copy. The least recently used datasets are dropped once the cached
//! arrays exceed the byte budget; deleting a dataset drops it at once. Counters (hits, misses,
//! waits, loads, evictions) say how well the cache serves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ndarray::Array2;
use serde::Serialize;
use tokio::sync::OnceCell;
use utoipa::ToSchema;

use crate::data::Labels;

/// A dataset's decoded arrays, as jobs use them.
#[derive(Debug)]
pub struct CachedArrays {
    /// `(n_samples, features)` as float32, shared with every trainer using it.
    pub x: Arc<Array2<f32>>,
    pub labels: Labels,
}

impl CachedArrays {
    /// Bytes the arrays hold.
    pub fn size_bytes(&self) -> u64 {
        let labels = match &self.labels {
            Labels::Classes(c) => c.len() * 4,
            Labels::Targets(t) => t.len() * 4,
        };
        (self.x.len() * 4 + labels) as u64
    }
}

/// Decoded datasets by id. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct DatasetCache {
    capacity_bytes: AtomicU64,
    inner: Mutex<Inner>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Inner {
    /// Slots by dataset id: loaded ones and loads in progress (empty cells).
    slots: HashMap<String, Arc<Slot>>,
    /// Sum of the loaded slots' sizes.
    bytes: u64,
    /// Monotonic use counter; the loaded slot with the smallest `last_used` goes first.
    clock: u64,
}

#[derive(Debug, Default)]
struct Slot {
    cell: OnceCell<Arc<CachedArrays>>,
    /// Set under the cache's lock: when the slot was last used, and whether its size is counted.
    last_used: AtomicU64,
    counted: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    waits: AtomicU64,
    loads: AtomicU64,
    load_failures: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

/// What the dataset cache holds and how it has served since the server started.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DatasetCacheStats {
    /// The budget (`--dataset-cache-bytes`); 0 turns the cache off.
    pub capacity_bytes: u64,
    /// Bytes of decoded arrays held now.
    pub bytes: u64,
    /// Datasets held now.
    pub datasets: u64,
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that read the dataset's files (one per load started).
    pub misses: u64,
    /// Lookups that waited for another job's load of the same dataset instead of reading it again.
    pub waits: u64,
    /// Datasets read and decoded successfully.
    pub loads: u64,
    /// Loads that failed (missing or unreadable files).
    pub load_failures: u64,
    /// Datasets dropped to stay within the budget.
    pub evictions: u64,
    /// Datasets dropped because they were deleted.
    pub invalidations: u64,
    /// `hits / (hits + misses + waits)`; `null` before the first lookup.
    pub hit_rate: Option<f64>,
}

impl DatasetCache {
    /// A cache holding at most `capacity_bytes` of arrays. A dataset bigger than that is loaded for
    /// its job but not kept.
    pub fn new(capacity_bytes: u64) -> DatasetCache {
        DatasetCache {
            capacity_bytes: AtomicU64::new(capacity_bytes),
            inner: Mutex::new(Inner::default()),
            counters: Counters::default(),
        }
    }

    /// Changes the budget, evicting datasets beyond the new one.
    pub fn set_capacity(&self, capacity_bytes: u64) {
        self.capacity_bytes.store(capacity_bytes, Ordering::Relaxed);
        let mut inner = self.lock();
        self.evict_locked(&mut inner, 0);
    }

    fn capacity(&self) -> u64 {
        self.capacity_bytes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update under the lock is a few inserts or removes that leave the map usable even if
        // a panic interrupted them, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The arrays of dataset `id` from memory, or from `load` (run by one caller at a time per id:
    /// concurrent callers wait for the running load and share its arrays). If that load fails, a
    /// waiter retries with its own `load`, so each gets its own error.
    pub async fn get_or_load<F, Fut, E>(&self, id: &str, load: F) -> Result<Arc<CachedArrays>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<CachedArrays, E>>,
    {
        let slot = {
            let mut inner = self.lock();
            inner.clock += 1;
            let now = inner.clock;
            let slot = Arc::clone(inner.slots.entry(id.to_string()).or_default());
            slot.last_used.store(now, Ordering::Relaxed);
            slot
        };
        if let Some(a) = slot.cell.get() {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Arc::clone(a));
        }
        let mut loaded = false;
        let result = slot
            .cell
            .get_or_try_init(|| {
                loaded = true;
                self.counters.misses.fetch_add(1, Ordering::Relaxed);
                let fut = load();
                async move { fut.await.map(Arc::new) }
            })
            .await
            .cloned();
        match (&result, loaded) {
            (Ok(arrays), true) => {
                self.counters.loads.fetch_add(1, Ordering::Relaxed);
                self.account(id, &slot, arrays.size_bytes());
            }
            (Err(_), true) => {
                self.counters.load_failures.fetch_add(1, Ordering::Relaxed);
                let mut inner = self.lock();
                if inner.slots.get(id).is_some_and(|s| Arc::ptr_eq(s, &slot)) && !slot.cell.initialized() {
                    inner.slots.remove(id);
                }
            }
            (_, false) => {
                self.counters.waits.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Counts a freshly loaded slot against the budget, or drops it when it was invalidated while
    /// loading or does not fit.
    fn account(&self, id: &str, slot: &Arc<Slot>, size: u64) {
        let mut inner = self.lock();
        if !inner.slots.get(id).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            // Deleted while it loaded: served to the jobs that asked, not kept.
            return;
        }
        if size > self.capacity() {
            inner.slots.remove(id);
            return;
        }
        slot.counted.store(true, Ordering::Relaxed);
        inner.bytes += size;
        self.evict_locked(&mut inner, 0);
    }

    /// Drops least recently used loaded datasets until `extra` more bytes fit in the budget.
    fn evict_locked(&self, inner: &mut Inner, extra: u64) {
        let capacity = self.capacity();
        while inner.bytes + extra > capacity {
            let Some(oldest) = inner
                .slots
                .iter()
                .filter(|(_, s)| s.counted.load(Ordering::Relaxed))
                .min_by_key(|(_, s)| s.last_used.load(Ordering::Relaxed))
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let gone = inner.slots.remove(&oldest).expect("key just found");
            inner.bytes -= gone.cell.get().map_or(0, |a| a.size_bytes());
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets dataset `id` (it was deleted); a load of it already running serves its callers but
    /// is not kept.
    pub fn invalidate(&self, id: &str) {
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.remove(id) {
            if slot.counted.load(Ordering::Relaxed) {
                inner.bytes -= slot.cell.get().map_or(0, |a| a.size_bytes());
            }
            self.counters.invalidations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether dataset `id` is held in memory.
    pub fn contains(&self, id: &str) -> bool {
        self.lock()
            .slots
            .get(id)
            .is_some_and(|s| s.counted.load(Ordering::Relaxed))
    }

    /// The counters and the current size.
    pub fn stats(&self) -> DatasetCacheStats {
        let (bytes, datasets) = {
            let inner = self.lock();
            let held = inner
                .slots
                .values()
                .filter(|s| s.counted.load(Ordering::Relaxed))
                .count();
            (inner.bytes, held as u64)
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hits, misses, waits) = (get(&c.hits), get(&c.misses), get(&c.waits));
        let lookups = hits + misses + waits;
        DatasetCacheStats {
            capacity_bytes: self.capacity(),
            bytes,
            datasets,
            hits,
            misses,
            waits,
            loads: get(&c.loads),
            load_failures: get(&c.load_failures),
            evictions: get(&c.evictions),
            invalidations: get(&c.invalidations),
            hit_rate: (lookups > 0).then(|| hits as f64 / lookups as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array1;

    /// `n` samples of 4 features and class labels: `n * 4 * 4 + n * 4` bytes.
    fn arrays(n: usize, fill: f32) -> CachedArrays {
        CachedArrays {
            x: Arc::new(Array2::from_elem((n, 4), fill)),
            labels: Labels::Classes(Array1::zeros(n)),
        }
    }

    async fn get(cache: &DatasetCache, id: &str, n: usize) -> Arc<CachedArrays> {
        cache
            .get_or_load(id, || async move { Ok::<_, ()>(arrays(n, 1.0)) })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_second_lookup_is_a_hit_sharing_the_same_arrays() {
        let cache = DatasetCache::new(1 << 20);
        let a = get(&cache, "a", 10).await;
        let b = get(&cache, "a", 10).await;
        assert!(Arc::ptr_eq(&a.x, &b.x));
        let s = cache.stats();
        assert_eq!(
            (s.hits, s.misses, s.loads, s.datasets, s.bytes),
            (1, 1, 1, 1, 200)
        );
    }

    #[tokio::test]
    async fn least_recently_used_datasets_are_evicted_by_size() {
        // Each dataset: 10 * 20 = 200 bytes.
        let cache = DatasetCache::new(450);
        get(&cache, "a", 10).await;
        get(&cache, "b", 10).await;
        get(&cache, "a", 10).await;
        get(&cache, "c", 10).await;
        assert!(!cache.contains("b"), "b was the least recently used");
        assert!(cache.contains("a") && cache.contains("c"));
        let s = cache.stats();
        assert_eq!((s.bytes, s.evictions, s.datasets), (400, 1, 2));
        cache.set_capacity(250);
        assert_eq!(cache.stats().datasets, 1);
        assert!(cache.contains("c"));
    }

    #[tokio::test]
    async fn a_dataset_bigger_than_the_budget_is_served_but_not_kept() {
        let cache = DatasetCache::new(100);
        let a = get(&cache, "big", 10).await;
        assert_eq!(a.x.nrows(), 10);
        assert!(!cache.contains("big"));
        assert_eq!(cache.stats().bytes, 0);
    }

    #[tokio::test]
    async fn invalidation_drops_the_dataset_and_a_load_running_meanwhile_is_not_kept() {
        let cache = DatasetCache::new(1 << 20);
        get(&cache, "a", 10).await;
        cache.invalidate("a");
        assert!(!cache.contains("a"));
        assert_eq!(cache.stats().bytes, 0);
        let got = cache
            .get_or_load("a", || async {
                cache.invalidate("a");
                Ok::<_, ()>(arrays(10, 2.0))
            })
            .await
            .unwrap();
        assert_eq!(got.x[(0, 0)], 2.0);
        assert!(!cache.contains("a"));
        let s = cache.stats();
        assert_eq!((s.bytes, s.datasets, s.invalidations, s.misses), (0, 0, 2, 2));
    }

    #[tokio::test]
    async fn concurrent_first_lookups_share_one_load() {
        let cache = DatasetCache::new(1 << 20);
        let calls = AtomicU64::new(0);
        let (go, ready) = tokio::sync::watch::channel(false);
        let lookups = (0..6).map(|_| {
            cache.get_or_load("a", || {
                calls.fetch_add(1, Ordering::Relaxed);
                let mut ready = ready.clone();
                async move {
                    // Hold the load open until every caller has arrived.
                    let _ = ready.wait_for(|r| *r).await;
                    Ok::<_, ()>(arrays(10, 1.0))
                }
            })
        });
        let all = futures_util::future::join_all(lookups);
        let release = async {
            tokio::task::yield_now().await;
            go.send_replace(true);
        };
        let (got, ()) = tokio::join!(all, release);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let first = got[0].as_ref().unwrap();
        assert!(got.iter().all(|a| Arc::ptr_eq(a.as_ref().unwrap(), first)));
        let s = cache.stats();
        assert_eq!((s.misses, s.waits, s.loads, s.hits, s.datasets), (1, 5, 1, 0, 1));
    }

    #[tokio::test]
    async fn a_failed_load_is_counted_and_the_next_lookup_tries_again() {
        let cache = DatasetCache::new(1 << 20);
        let failed = cache
            .get_or_load("a", || async { Err::<CachedArrays, _>("gone") })
            .await;
        assert_eq!(failed.unwrap_err(), "gone");
        assert!(!cache.contains("a"));
        get(&cache, "a", 10).await;
        let s = cache.stats();
        assert_eq!((s.misses, s.loads, s.load_failures, s.datasets), (2, 1, 1, 1));
    }
}
