//! A bounded in-memory cache of decoded models, so a predict never re-reads SQLite or re-decodes
//! safetensors; evicts the least recently used models once their weights exceed the byte budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::ServedModel;

/// Decoded models by saved-model id. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct ModelCache {
    capacity_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Sum of the entries' sizes.
    bytes: usize,
    /// Monotonic use counter; the entry with the smallest `last_used` goes first.
    clock: u64,
}

#[derive(Debug)]
struct Entry {
    model: Arc<ServedModel>,
    last_used: u64,
}

impl ModelCache {
    /// A cache holding at most `capacity_bytes` of weights. A model bigger than that is served but
    /// not kept.
    pub fn new(capacity_bytes: usize) -> ModelCache {
        ModelCache {
            capacity_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is one
        // insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &str) -> Option<Arc<ServedModel>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(id)?;
        entry.last_used = now;
        Some(entry.model.clone())
    }

    /// Adds (or replaces) a model, evicting least recently used ones to stay within the budget.
    pub fn insert(&self, model: Arc<ServedModel>) {
        let size = model.size_bytes;
        if size > self.capacity_bytes {
            return;
        }
        let mut inner = self.lock();
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
        }
        inner.clock += 1;
        let last_used = inner.clock;
        inner.bytes += size;
        inner.entries.insert(model.id.clone(), Entry { model, last_used });
    }

    pub fn remove(&self, id: &str) {
        let mut inner = self.lock();
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::ModelSpec;

    fn served(id: &str, units: u64) -> Arc<ServedModel> {
        let spec: ModelSpec = serde_json::from_value(serde_json::json!({
            "input_shape": [4],
            "layers": [{"type": "dense", "units": units}]
        }))
        .unwrap();
        let model = crate::nn::Model::new(&spec.to_nn(), 1).unwrap();
        let tensors = model.tensors();
        Arc::new(ServedModel::build(id.into(), "m".into(), spec, &tensors).unwrap())
    }

    #[test]
    fn least_recently_used_models_are_evicted_by_size() {
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
    }

    #[test]
    fn a_model_bigger_than_the_budget_is_not_kept() {
        let cache = ModelCache::new(100);
        cache.insert(served("big", 10));
        assert!(cache.is_empty());
    }
}
