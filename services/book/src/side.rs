//! One side of the book: orders kept in priority order, their data kept out of the tree.
//!
//! A `BTreeMap` shifts entries within a node on every insert and remove. With the order
//! data (64 bytes an ask) as the map's values, that memmove was a tenth of the engine's
//! time; here the tree holds 4-byte slot numbers and the data sits still in a slab whose
//! free slots are reused, so the slab stops growing once the book's size is steady.

use std::collections::BTreeMap;

#[derive(Clone, Debug)]
pub(crate) struct Side<K, V> {
    order: BTreeMap<K, u32>,
    slots: Vec<V>,
    free: Vec<u32>,
}

impl<K: Ord + Copy, V: Copy> Side<K, V> {
    pub(crate) fn new() -> Self {
        Side { order: BTreeMap::new(), slots: Vec::new(), free: Vec::new() }
    }

    /// The order in slot `at`, as given by [`Side::insert`]; valid until it is removed.
    pub(crate) fn slot(&self, at: u32) -> &V {
        &self.slots[at as usize]
    }

    /// The order in slot `at`, to change in place (its key stays as it is).
    pub(crate) fn slot_mut(&mut self, at: u32) -> &mut V {
        &mut self.slots[at as usize]
    }

    /// The slot of the order under `key`.
    pub(crate) fn at(&self, key: &K) -> Option<u32> {
        self.order.get(key).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.order.contains_key(key)
    }

    pub(crate) fn first_key_value(&self) -> Option<(&K, &V)> {
        self.order.first_key_value().map(|(key, &at)| (key, self.slot(at)))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.order.iter().map(|(key, &at)| (key, self.slot(at)))
    }

    /// Inserts an order under a key no other order has; returns its slot.
    pub(crate) fn insert(&mut self, key: K, value: V) -> u32 {
        let at = match self.free.pop() {
            Some(at) => {
                self.slots[at as usize] = value;
                at
            }
            None => {
                let at = u32::try_from(self.slots.len()).expect("fewer than 2^32 resting orders");
                self.slots.push(value);
                at
            }
        };
        let previous = self.order.insert(key, at);
        assert!(previous.is_none(), "two orders share one priority key");
        at
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let at = self.order.remove(key)?;
        self.free.push(at);
        Some(*self.slot(at))
    }

    /// Panics unless every slot is either in the tree exactly once or free.
    pub(crate) fn check(&self) {
        let mut used = vec![false; self.slots.len()];
        for &at in self.order.values().chain(&self.free) {
            assert!(!std::mem::replace(&mut used[at as usize], true), "slot {at} used twice");
        }
        assert!(used.iter().all(|&u| u), "slot leaked");
    }
}
