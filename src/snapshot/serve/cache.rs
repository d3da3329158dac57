//! What memory keeps of the older dates: their indexes, and the pieces requests asked for.
//!
//! Two least-recently-used caches, each behind a mutex held only to look up, insert or evict,
//! never while a thread reads the store or decompresses: a request answered from memory never
//! waits for another's I/O. [`Lru`] is a hash map over a doubly linked list in a slab, so each
//! of those steps is O(1) and an eviction never sorts the cache under its lock. (No LRU crate is
//! in the dependency tree; this is sixty lines.)
//!
//! Pieces are kept by content ([`Form`] and key): a piece is the same bytes for every date that
//! names it, so the cache never needs to know which dates those are, and nothing it holds can go
//! stale when a date is deleted or replaced. Indexes are kept by date and by the catalog's
//! generation of that date, and taken only while the catalog still has that generation.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use slab::Slab;

use crate::gzip::Compressed;
use crate::snapshot::piece::Digest;

/// A least-recently-used map bounded by the sum of its entries' costs.
pub struct Lru<K, V> {
    map: HashMap<K, usize>,
    nodes: Slab<Node<K, V>>,
    /// Most recently used.
    head: Option<usize>,
    /// Least recently used: evicted first.
    tail: Option<usize>,
    cost: usize,
    budget: usize,
}

struct Node<K, V> {
    key: K,
    value: V,
    cost: usize,
    newer: Option<usize>,
    older: Option<usize>,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub fn new(budget: usize) -> Self {
        Self { map: HashMap::new(), nodes: Slab::new(), head: None, tail: None, cost: 0, budget }
    }

    /// The value under `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        let at = *self.map.get(key)?;
        self.unlink(at);
        self.push_front(at);
        self.nodes.get(at).map(|node| node.value.clone())
    }

    /// The value under `key`, leaving the order as it is (for a listing, not a request).
    pub fn peek(&self, key: &K) -> Option<&V> {
        self.nodes.get(*self.map.get(key)?).map(|node| &node.value)
    }

    /// Keeps `value` under `key` (replacing what was there), then drops the least recently
    /// used entries until the costs fit the budget. One that alone is over it is not kept, and
    /// pushes nothing out.
    pub fn insert(&mut self, key: K, value: V, cost: usize) {
        self.remove(&key);
        if cost > self.budget {
            return;
        }
        let at =
            self.nodes.insert(Node { key: key.clone(), value, cost, newer: None, older: None });
        self.map.insert(key, at);
        self.cost += cost;
        self.push_front(at);
        while self.cost > self.budget {
            let Some(oldest) = self.tail else { break };
            self.remove_at(oldest);
        }
    }

    /// Drops every entry whose key `stale` says is stale.
    pub fn remove_where(&mut self, stale: impl Fn(&K) -> bool) {
        let gone: Vec<usize> =
            self.nodes.iter().filter(|(_, node)| stale(&node.key)).map(|(at, _)| at).collect();
        gone.into_iter().for_each(|at| self.remove_at(at));
    }

    fn remove(&mut self, key: &K) {
        if let Some(&at) = self.map.get(key) {
            self.remove_at(at);
        }
    }

    /// What the entries cost together.
    pub fn cost(&self) -> usize {
        self.cost
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.nodes.iter().map(|(_, node)| &node.value)
    }

    fn remove_at(&mut self, at: usize) {
        self.unlink(at);
        if let Some(node) = self.nodes.try_remove(at) {
            self.map.remove(&node.key);
            self.cost -= node.cost;
        }
    }

    fn unlink(&mut self, at: usize) {
        let Some(node) = self.nodes.get(at) else { return };
        let (newer, older) = (node.newer, node.older);
        match newer.and_then(|n| self.nodes.get_mut(n)) {
            Some(n) => n.older = older,
            None => self.head = older,
        }
        match older.and_then(|o| self.nodes.get_mut(o)) {
            Some(o) => o.newer = newer,
            None => self.tail = newer,
        }
        if let Some(node) = self.nodes.get_mut(at) {
            (node.newer, node.older) = (None, None);
        }
    }

    fn push_front(&mut self, at: usize) {
        let old_head = self.head;
        if let Some(node) = self.nodes.get_mut(at) {
            node.older = old_head;
        }
        if let Some(head) = old_head.and_then(|h| self.nodes.get_mut(h)) {
            head.newer = Some(at);
        }
        self.head = Some(at);
        if self.tail.is_none() {
            self.tail = Some(at);
        }
    }
}

/// The form a piece is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Form {
    /// An application's JSON.
    AppPlain,
    /// An application's deflate segment.
    AppDeflate,
    /// A run's JSON: its ten applications and the commas between them.
    RunPlain,
    /// A run's deflate segment.
    RunDeflate,
}

#[derive(Clone)]
pub enum Kept {
    Plain(Arc<[u8]>),
    Deflate(Arc<Compressed>),
}

impl Kept {
    /// What it holds, with the bookkeeping of an entry.
    pub fn cost(&self) -> usize {
        let bytes = match self {
            Self::Plain(plain) => plain.len(),
            Self::Deflate(compressed) => compressed.memory_bytes(),
        };
        bytes + 96
    }
}

/// The pieces of older dates that requests asked for, within `cache_mib`.
pub type Pieces = Lru<(Form, Digest), Kept>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_go_first_and_the_costs_stay_within_the_budget() {
        let mut lru: Lru<u32, &str> = Lru::new(10);
        lru.insert(1, "a", 4);
        lru.insert(2, "b", 4);
        assert_eq!(lru.get(&1), Some("a"), "1 is now the most recently used");
        lru.insert(3, "c", 4);
        assert_eq!((lru.get(&2), lru.get(&1), lru.get(&3)), (None, Some("a"), Some("c")));
        assert_eq!(lru.cost(), 8);
        lru.insert(1, "A", 2);
        assert_eq!((lru.get(&1), lru.cost()), (Some("A"), 6));
        lru.insert(4, "huge", 11);
        assert_eq!(lru.get(&4), None, "an entry over the budget alone is not kept");
        assert_eq!((lru.get(&1), lru.get(&3)), (Some("A"), Some("c")));
        lru.remove_where(|k| *k == 3);
        assert_eq!((lru.get(&3), lru.cost()), (None, 2));
        for k in 10..1000 {
            lru.insert(k, "x", 1);
        }
        assert_eq!(lru.cost(), 10);
        assert_eq!(lru.values().count(), 10);
        assert_eq!(lru.get(&999), Some("x"));
        assert_eq!(lru.get(&989), None);
    }
}
