//! A table of connections ordered by recent activity, with the bytes each one buffers.
//!
//! Both per-connection stages (reassembly and request tracking) keep one. Finding the least
//! recently active connection (to make room, to sweep idle ones, to get back under the
//! memory budget) is O(log N) through an ordered index kept beside the map, never a scan of
//! every connection; the total of the bytes buffered is kept as each connection reports
//! its own, so it costs O(1) per event.

use std::collections::{BTreeMap, HashMap};

use crate::conn::ConnKey;

/// Where a connection stands in the activity order: its last activity (kernel ns), then
/// the order in which it was touched, so ties keep a stable order.
type Stamp = (u64, u64);

struct Slot<V> {
    value: V,
    stamp: Stamp,
    bytes: usize,
}

/// Connections by key, ordered by last activity, with their buffered bytes summed.
pub(crate) struct LruTable<V> {
    map: HashMap<ConnKey, Slot<V>>,
    order: BTreeMap<Stamp, ConnKey>,
    next: u64,
    bytes: usize,
}

impl<V> Default for LruTable<V> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            bytes: 0,
        }
    }
}

impl<V> LruTable<V> {
    fn stamp(&mut self, ts_ns: u64) -> Stamp {
        self.next = self.next.wrapping_add(1);
        (ts_ns, self.next)
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes buffered by every connection, as each last reported.
    pub fn buffered_bytes(&self) -> usize {
        self.bytes
    }

    pub fn contains_key(&self, key: &ConnKey) -> bool {
        self.map.contains_key(key)
    }

    /// Adds a connection active at `ts_ns`, buffering `bytes`; returns the one it replaced.
    pub fn insert(&mut self, key: ConnKey, value: V, ts_ns: u64, bytes: usize) -> Option<V> {
        let old = self.remove(&key);
        let stamp = self.stamp(ts_ns);
        self.order.insert(stamp, key);
        self.bytes = self.bytes.saturating_add(bytes);
        self.map.insert(
            key,
            Slot {
                value,
                stamp,
                bytes,
            },
        );
        old
    }

    pub fn remove(&mut self, key: &ConnKey) -> Option<V> {
        let slot = self.map.remove(key)?;
        self.order.remove(&slot.stamp);
        self.bytes = self.bytes.saturating_sub(slot.bytes);
        Some(slot.value)
    }

    /// The connection, without counting it as activity.
    pub fn get(&self, key: &ConnKey) -> Option<&V> {
        self.map.get(key).map(|s| &s.value)
    }

    /// The connection, without counting it as activity.
    pub fn get_mut(&mut self, key: &ConnKey) -> Option<&mut V> {
        self.map.get_mut(key).map(|s| &mut s.value)
    }

    /// The connection was active at `ts_ns` (its activity never goes back in time): it
    /// becomes the most recently active.
    pub fn touch(&mut self, key: &ConnKey, ts_ns: u64) {
        let Some(old) = self.map.get(key).map(|s| s.stamp) else {
            return;
        };
        let stamp = self.stamp(old.0.max(ts_ns));
        self.order.remove(&old);
        self.order.insert(stamp, *key);
        if let Some(slot) = self.map.get_mut(key) {
            slot.stamp = stamp;
        }
    }

    /// The connection buffers `bytes` now.
    pub fn set_bytes(&mut self, key: &ConnKey, bytes: usize) {
        if let Some(slot) = self.map.get_mut(key) {
            self.bytes = self.bytes.saturating_sub(slot.bytes).saturating_add(bytes);
            slot.bytes = bytes;
        }
    }

    /// The least recently active connection and its last activity.
    pub fn oldest(&self) -> Option<(ConnKey, u64)> {
        self.order.first_key_value().map(|(s, k)| (*k, s.0))
    }

    /// The least recently active connection other than `except`.
    pub fn oldest_except(&self, except: ConnKey) -> Option<ConnKey> {
        self.order.values().find(|k| **k != except).copied()
    }

    /// Last activity of a connection.
    pub fn last_ts(&self, key: &ConnKey) -> Option<u64> {
        self.map.get(key).map(|s| s.stamp.0)
    }

    pub fn keys(&self) -> impl Iterator<Item = &ConnKey> {
        self.map.keys()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.map.values().map(|s| &s.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64) -> ConnKey {
        ConnKey {
            tgid: 1,
            conn_id: id,
        }
    }

    #[test]
    fn orders_by_activity_and_sums_bytes() {
        let mut t = LruTable::default();
        t.insert(key(1), "a", 10, 100);
        t.insert(key(2), "b", 20, 50);
        t.insert(key(3), "c", 20, 5);
        assert_eq!(t.oldest(), Some((key(1), 10)));
        assert_eq!(t.buffered_bytes(), 155);
        t.touch(&key(1), 30);
        assert_eq!(t.oldest(), Some((key(2), 20)), "ties keep insertion order");
        t.touch(&key(2), 5);
        assert_eq!(t.last_ts(&key(2)), Some(20), "activity never goes back");
        assert_eq!(t.oldest(), Some((key(3), 20)));
        assert_eq!(t.oldest_except(key(3)), Some(key(2)));
        t.set_bytes(&key(1), 1);
        assert_eq!(t.buffered_bytes(), 56);
        assert_eq!(t.remove(&key(2)), Some("b"));
        assert_eq!(t.buffered_bytes(), 6);
        assert_eq!(t.insert(key(3), "d", 40, 0), Some("c"));
        assert_eq!((t.len(), t.buffered_bytes()), (2, 1));
        assert_eq!(t.oldest(), Some((key(1), 30)));
    }
}
