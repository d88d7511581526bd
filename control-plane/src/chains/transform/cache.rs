//! A small least-recently-used map from document text to a compiled program.

use std::collections::HashMap;

/// At most `capacity` entries; inserting past it drops the least recently used one (a linear scan,
/// cheap at a few hundred entries).
pub(super) struct Lru<V> {
    entries: HashMap<String, (V, u64)>,
    tick: u64,
    capacity: usize,
}

impl<V: Clone> Lru<V> {
    /// An empty map holding at most `capacity` (at least 1) entries.
    pub(super) fn new(capacity: usize) -> Self {
        Self { entries: HashMap::new(), tick: 0, capacity: capacity.max(1) }
    }

    /// The entry for `key`, marked as just used.
    pub(super) fn get(&mut self, key: &str) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(value, used)| {
            *used = tick;
            value.clone()
        })
    }

    /// Stores `value` for `key`, evicting the least recently used entry when full.
    pub(super) fn insert(&mut self, key: String, value: V) {
        self.tick += 1;
        if !self.entries.contains_key(&key)
            && self.entries.len() >= self.capacity
            && let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
        self.entries.insert(key, (value, self.tick));
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Looks `key` up in the thread-local `cache`, compiling and storing it on a miss.
pub(super) fn get_or_compile<V: Clone, E>(
    cache: &'static std::thread::LocalKey<std::cell::RefCell<Lru<V>>>,
    key: &str,
    compile: impl FnOnce() -> Result<V, E>,
) -> Result<V, E> {
    if let Some(hit) = cache.with_borrow_mut(|c| c.get(key)) {
        return Ok(hit);
    }
    let compiled = compile()?;
    cache.with_borrow_mut(|c| c.insert(key.to_owned(), compiled.clone()));
    Ok(compiled)
}
