//! A bounded in-memory cache of decoded models, so a predict never re-reads SQLite or re-decodes
//! safetensors; evicts the least recently used models once their weights exceed the byte budget.
//!
//! Loads are single-flight: when several requests want the same cold model at once, one decodes it
//! and the others wait for that result instead of each decoding their own copy. Counters (hits,
//! misses, waits, loads, evictions) say how well the cache serves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use super::ServedModel;

/// Decoded models by saved-model id. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ModelCache {
    capacity_bytes: usize,
    inner: Mutex<Inner>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Loads in progress by id; waiters subscribe and get the leader's model when it is done.
    loading: HashMap<String, watch::Sender<Option<Arc<ServedModel>>>>,
    /// Sum of the entries' sizes.
    bytes: usize,
    /// Monotonic use counter; the entry with the smallest `last_used` goes first.
    clock: u64,
    /// Bumped by every [`ModelCache::remove`], so a model decoded from a row read before a delete
    /// is not cached after it.
    removals: u64,
}

#[derive(Debug)]
struct Entry {
    model: Arc<ServedModel>,
    last_used: u64,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    waits: AtomicU64,
    loads: AtomicU64,
    load_failures: AtomicU64,
    evictions: AtomicU64,
}

/// What the cache holds and how it has served since the server started.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CacheStats {
    /// The budget (`--model-cache-bytes`).
    pub capacity_bytes: u64,
    /// Bytes of weights held now.
    pub bytes: u64,
    /// Models held now.
    pub models: u64,
    /// Lookups answered from memory.
    pub hits: u64,
    /// Lookups that had to load the model (one per load started).
    pub misses: u64,
    /// Lookups that waited for another request's load of the same model instead of loading it again.
    pub waits: u64,
    /// Models read and decoded successfully.
    pub loads: u64,
    /// Loads that failed (unknown id, unreadable row).
    pub load_failures: u64,
    /// Models dropped to stay within the budget.
    pub evictions: u64,
    /// `hits / (hits + misses + waits)`; `null` before the first lookup.
    pub hit_rate: Option<f64>,
}

/// Removes a load from `loading` however the leader ends (done, failed or cancelled), which wakes
/// its waiters; on success they receive the model first.
struct Leader<'a> {
    cache: &'a ModelCache,
    id: &'a str,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.cache.lock().loading.remove(self.id);
    }
}

impl ModelCache {
    /// A cache holding at most `capacity_bytes` of weights. A model bigger than that is served but
    /// not kept.
    pub fn new(capacity_bytes: usize) -> ModelCache {
        ModelCache {
            capacity_bytes,
            inner: Mutex::new(Inner::default()),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is one
        // insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached model, marked as just used.
    pub fn get(&self, id: &str) -> Option<Arc<ServedModel>> {
        self.lock().touch(id)
    }

    /// The model `id` from memory, or from `load` (called at most once at a time per id: concurrent
    /// callers wait for the running load and share its model). If that load fails, waiters retry
    /// with their own `load`, so each gets its own error.
    pub async fn get_or_load<F, Fut, E>(&self, id: &str, load: F) -> Result<Arc<ServedModel>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<ServedModel, E>>,
    {
        let mut load = Some(load);
        loop {
            let (mut rx, token) = {
                let mut inner = self.lock();
                if let Some(m) = inner.touch(id) {
                    self.counters.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(m);
                }
                match inner.loading.get(id) {
                    Some(tx) => (tx.subscribe(), None),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inner.loading.insert(id.to_string(), tx);
                        (rx, Some(inner.removals))
                    }
                }
            };
            let Some(token) = token else {
                self.counters.waits.fetch_add(1, Ordering::Relaxed);
                // Ends when the leader publishes its model, or gives up (its sender is dropped).
                let _ = rx.changed().await;
                if let Some(m) = rx.borrow().clone() {
                    return Ok(m);
                }
                continue;
            };
            self.counters.misses.fetch_add(1, Ordering::Relaxed);
            let _leader = Leader { cache: self, id };
            let load = load.take().expect("a caller leads at most one load");
            match load().await {
                Ok(model) => {
                    self.counters.loads.fetch_add(1, Ordering::Relaxed);
                    let model = Arc::new(model);
                    let mut inner = self.lock();
                    // A model read before a removal may be deleted by now: serve it to this
                    // request and its waiters, but do not keep it.
                    if inner.removals == token {
                        self.insert_locked(&mut inner, model.clone());
                    }
                    if let Some(tx) = inner.loading.remove(id) {
                        tx.send_replace(Some(model.clone()));
                    }
                    return Ok(model);
                }
                Err(e) => {
                    self.counters.load_failures.fetch_add(1, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    }

    /// Adds (or replaces) a model, evicting least recently used ones to stay within the budget.
    pub fn insert(&self, model: Arc<ServedModel>) {
        let mut inner = self.lock();
        self.insert_locked(&mut inner, model);
    }

    fn insert_locked(&self, inner: &mut Inner, model: Arc<ServedModel>) {
        let size = model.size_bytes;
        if size > self.capacity_bytes {
            return;
        }
        if let Some(old) = inner.entries.remove(&model.id) {
            inner.bytes -= old.model.size_bytes;
        }
        while inner.bytes + size > self.capacity_bytes {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            let gone = inner.entries.remove(&oldest).expect("key just found");
            inner.bytes -= gone.model.size_bytes;
            self.counters.evictions.fetch_add(1, Ordering::Relaxed);
        }
        inner.clock += 1;
        let last_used = inner.clock;
        inner.bytes += size;
        inner.entries.insert(model.id.clone(), Entry { model, last_used });
    }

    /// Forgets `id`; a load of it already running is served but not kept.
    pub fn remove(&self, id: &str) {
        let mut inner = self.lock();
        inner.removals += 1;
        if let Some(old) = inner.entries.remove(id) {
            inner.bytes -= old.model.size_bytes;
        }
    }

    /// Bytes of weights currently held.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The counters and the current size.
    pub fn stats(&self) -> CacheStats {
        let (bytes, models) = {
            let inner = self.lock();
            (inner.bytes as u64, inner.entries.len() as u64)
        };
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (hits, misses, waits) = (get(&c.hits), get(&c.misses), get(&c.waits));
        let lookups = hits + misses + waits;
        CacheStats {
            capacity_bytes: self.capacity_bytes as u64,
            bytes,
            models,
            hits,
            misses,
            waits,
            loads: get(&c.loads),
            load_failures: get(&c.load_failures),
            evictions: get(&c.evictions),
            hit_rate: (lookups > 0).then(|| hits as f64 / lookups as f64),
        }
    }
}

impl Inner {
    fn touch(&mut self, id: &str) -> Option<Arc<ServedModel>> {
        self.clock += 1;
        let now = self.clock;
        let entry = self.entries.get_mut(id)?;
        entry.last_used = now;
        Some(entry.model.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::ModelSpec;

    fn served(id: &str, units: u64) -> Arc<ServedModel> {
        Arc::new(decoded(id, units))
    }

    fn decoded(id: &str, units: u64) -> ServedModel {
        let spec: ModelSpec = serde_json::from_value(serde_json::json!({
            "input_shape": [4],
            "layers": [{"type": "dense", "units": units}]
        }))
        .unwrap();
        let model = crate::nn::Model::new(&spec.to_nn(), 1).unwrap();
        let tensors = model.tensors();
        ServedModel::build(id.into(), "m".into(), spec, &tensors).unwrap()
    }

    #[test]
    fn least_recently_used_models_are_evicted_by_size_and_counted() {
        // Each model: (4 * 10 + 10) floats = 200 bytes.
        let cache = ModelCache::new(450);
        cache.insert(served("a", 10));
        cache.insert(served("b", 10));
        assert_eq!(cache.bytes(), 400);
        assert!(cache.get("a").is_some());
        cache.insert(served("c", 10));
        assert!(cache.get("b").is_none(), "b was the least recently used");
        assert!(cache.get("a").is_some() && cache.get("c").is_some());
        assert_eq!(cache.bytes(), 400);
        cache.remove("a");
        assert_eq!((cache.len(), cache.bytes()), (1, 200));
        assert_eq!(cache.stats().evictions, 1);
    }

    #[tokio::test]
    async fn a_model_read_before_a_removal_is_served_but_not_cached_after_it() {
        let cache = ModelCache::new(1000);
        let got = cache
            .get_or_load("a", || async {
                cache.remove("a");
                Ok::<_, ()>(decoded("a", 10))
            })
            .await
            .unwrap();
        assert_eq!(got.id, "a");
        assert!(cache.get("a").is_none());
        cache
            .get_or_load("a", || async { Ok::<_, ()>(decoded("a", 10)) })
            .await
            .unwrap();
        assert!(cache.get("a").is_some());
    }

    #[tokio::test]
    async fn concurrent_first_requests_share_one_load() {
        let cache = ModelCache::new(1 << 20);
        let calls = AtomicU64::new(0);
        let (go, ready) = tokio::sync::watch::channel(false);
        let lookups = (0..8).map(|_| {
            cache.get_or_load("a", || {
                calls.fetch_add(1, Ordering::Relaxed);
                let mut ready = ready.clone();
                async move {
                    // Hold the load open until every caller has arrived.
                    let _ = ready.wait_for(|r| *r).await;
                    Ok::<_, ()>(decoded("a", 10))
                }
            })
        });
        let all = futures_util::future::join_all(lookups);
        let release = async {
            tokio::task::yield_now().await;
            go.send_replace(true);
        };
        let (models, ()) = tokio::join!(all, release);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        let first = models[0].as_ref().unwrap();
        assert!(models.iter().all(|m| Arc::ptr_eq(m.as_ref().unwrap(), first)));
        let s = cache.stats();
        assert_eq!((s.misses, s.waits, s.loads, s.hits), (1, 7, 1, 0));
        cache.get("a").unwrap();
        assert_eq!(cache.stats().models, 1);
    }

    #[tokio::test]
    async fn waiters_retry_when_the_leading_load_fails() {
        let cache = ModelCache::new(1 << 20);
        let (go, ready) = tokio::sync::watch::channel(false);
        let failing = cache.get_or_load("a", || {
            let mut ready = ready.clone();
            async move {
                let _ = ready.wait_for(|r| *r).await;
                Err::<ServedModel, _>("gone")
            }
        });
        let waiting = cache.get_or_load("a", || async { Ok::<_, &str>(decoded("a", 10)) });
        let release = async {
            tokio::task::yield_now().await;
            go.send_replace(true);
        };
        let (a, b, ()) = tokio::join!(failing, waiting, release);
        assert_eq!(a.unwrap_err(), "gone");
        assert_eq!(b.unwrap().id, "a");
        let s = cache.stats();
        assert_eq!((s.misses, s.waits, s.loads, s.load_failures), (2, 1, 1, 1));
    }

    #[test]
    fn a_model_bigger_than_the_budget_is_not_kept() {
        let cache = ModelCache::new(100);
        cache.insert(served("big", 10));
        assert!(cache.is_empty());
    }
}
