//! Where each device is in the log, per (user_id, device_id, app_type).
//!
//! Positions live in memory and are written to the store in batches by a background task. A
//! crash between two flushes can only move a device back, so it receives some events again
//! (at-least-once); it never moves a device forward past an event it did not receive.
//!
//! Pulls of one device are serialized by a per-device lock, so two concurrent pulls never hand
//! out the same page twice or move the position backwards.
//!
//! Memory holds at most `sync.max_cached_devices` devices for long: beyond that, devices that
//! are not being pulled for and whose state is written are let go after a flush, those that
//! pulled longest ago first, and loaded from the store again at their next pull.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

pub use crate::store::{DeviceKey, DeviceState};
use crate::store::{EventStore, StoreError};

type Slot = Arc<tokio::sync::Mutex<Option<DeviceState>>>;

pub struct Positions {
    store: Arc<dyn EventStore>,
    slots: Mutex<HashMap<DeviceKey, Slot>>,
    /// States changed since the last flush.
    dirty: Mutex<HashMap<DeviceKey, DeviceState>>,
}

/// Exclusive access to one device's position for the length of a pull, until its answer has
/// been written out (see [`DeviceGuard::commit`]).
pub struct DeviceGuard {
    positions: Arc<Positions>,
    key: DeviceKey,
    slot: OwnedMutexGuard<Option<DeviceState>>,
}

impl DeviceGuard {
    pub fn key(&self) -> &DeviceKey {
        &self.key
    }

    pub fn state(&self) -> Option<&DeviceState> {
        self.slot.as_ref()
    }

    /// Records the device's new state; it reaches the store with the next flush.
    pub fn commit(mut self, state: DeviceState) {
        self.positions
            .dirty
            .lock()
            .insert(self.key.clone(), state.clone());
        *self.slot = Some(state);
    }
}

impl Positions {
    pub fn new(store: Arc<dyn EventStore>) -> Positions {
        Positions {
            store,
            slots: Mutex::new(HashMap::new()),
            dirty: Mutex::new(HashMap::new()),
        }
    }

    /// Locks the device's slot, loading it from the store the first time it is used.
    pub async fn lock(self: &Arc<Self>, key: DeviceKey) -> Result<DeviceGuard, StoreError> {
        // A new slot is locked before it is published, so nobody sees it before it is loaded.
        let (existing, fresh_guard) = {
            let mut slots = self.slots.lock();
            match slots.get(&key) {
                Some(slot) => (Some(slot.clone()), None),
                None => {
                    let slot: Slot = Arc::new(tokio::sync::Mutex::new(None));
                    let guard = slot.clone().try_lock_owned().ok();
                    slots.insert(key.clone(), slot);
                    (None, guard)
                }
            }
        };
        let fresh = fresh_guard.is_some();
        let mut guard = match (existing, fresh_guard) {
            (_, Some(guard)) => guard,
            (Some(slot), None) => slot.lock_owned().await,
            (None, None) => {
                return Err(StoreError::Setup("device slot lock failed".into()));
            }
        };
        if fresh {
            match self.store.load_device(&key).await {
                Ok(state) => *guard = state,
                Err(e) => {
                    // Forget the slot so that the next pull tries the store again.
                    drop(guard);
                    self.slots.lock().remove(&key);
                    return Err(e);
                }
            }
        }
        Ok(DeviceGuard {
            positions: self.clone(),
            key,
            slot: guard,
        })
    }

    /// The device's state, without keeping it in memory when it is not there already.
    pub async fn peek(&self, key: &DeviceKey) -> Result<Option<DeviceState>, StoreError> {
        let slot = self.slots.lock().get(key).cloned();
        match slot {
            Some(slot) => Ok(slot.lock().await.clone()),
            None => self.store.load_device(key).await,
        }
    }

    /// When more than `max` devices are kept in memory, lets go of the ones that pulled longest
    /// ago until a quarter of `max` is free again (so that this runs seldom), keeping every
    /// device that is being pulled for and every device whose latest state has not been written
    /// yet. A device let go is loaded from the store at its next pull. Returns how many were let
    /// go. `max` 0 keeps every device.
    pub fn evict_idle(&self, max: usize) -> usize {
        let mut slots = self.slots.lock();
        if max == 0 || slots.len() <= max {
            return 0;
        }
        let target = max - max / 4;
        let mut idle: Vec<(String, DeviceKey)> = {
            let dirty = self.dirty.lock();
            slots
                .iter()
                .filter(|(key, slot)| {
                    // Every holder of a slot clones it under `slots`' lock, which is held here:
                    // a slot only the map holds is not locked, and nobody is about to lock it.
                    Arc::strong_count(slot) == 1 && !dirty.contains_key(*key)
                })
                .filter_map(|(key, slot)| {
                    let state = slot.try_lock().ok()?;
                    let last = state
                        .as_ref()
                        .map(|s| s.last_sync_time.clone())
                        .unwrap_or_default();
                    Some((last, key.clone()))
                })
                .collect()
        };
        let excess = (slots.len() - target).min(idle.len());
        if excess == 0 {
            return 0;
        }
        if excess < idle.len() {
            // Times are RFC 3339 in UTC, written alike: they sort as strings.
            idle.select_nth_unstable_by(excess - 1, |a, b| a.0.cmp(&b.0));
        }
        for (_, key) in &idle[..excess] {
            slots.remove(key);
        }
        excess
    }

    /// Writes every changed state to the store in one transaction.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let batch: Vec<(DeviceKey, DeviceState)> = self.dirty.lock().drain().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match self.store.save_devices(&batch).await {
            Ok(()) => Ok(batch.len()),
            Err(e) => {
                // Keep them for the next flush, unless a newer state arrived meanwhile.
                let mut dirty = self.dirty.lock();
                for (key, state) in batch {
                    dirty.entry(key).or_insert(state);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn key(n: i64) -> DeviceKey {
        DeviceKey {
            user_id: 5,
            device_id: format!("tablet-{n}"),
            app_type: "sales_app".into(),
        }
    }

    /// A state whose last pull was `n` seconds into the day.
    fn state(n: i64) -> DeviceState {
        DeviceState {
            position: 100 + n,
            sync_count: 1,
            first_sync_time: "2026-11-30T00:00:00.000000Z".into(),
            last_sync_time: format!("2026-11-30T00:00:{n:02}.000000Z"),
            feed_epoch: 0,
            tombstone_mark: 0,
        }
    }

    async fn pulled(positions: &Arc<Positions>, n: i64) {
        let device = positions.lock(key(n)).await.expect("lock");
        device.commit(state(n));
    }

    #[tokio::test]
    async fn idle_devices_that_pulled_longest_ago_are_let_go_and_come_back_from_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn EventStore> = Arc::new(SqliteStore::open_for_test(&dir).await);
        let positions = Arc::new(Positions::new(store.clone()));
        // Eight devices, pulled in the order of their numbers; all written.
        for n in [3, 1, 4, 8, 5, 2, 7, 6] {
            pulled(&positions, n).await;
        }
        positions.flush().await.expect("flush");
        assert_eq!(positions.evict_idle(0), 0, "0 keeps every device");
        assert_eq!(positions.evict_idle(8), 0, "at the limit, nothing goes");

        // Device 1 is being pulled for, device 2's newest state is not written yet.
        let busy = positions.lock(key(1)).await.expect("lock");
        pulled(&positions, 2).await;
        // Down to 6 - 6/4 = 5 devices: three go, the oldest among those that may.
        assert_eq!(positions.evict_idle(6), 3);
        assert_eq!(positions.slots.lock().len(), 5);
        let kept: Vec<bool> = (1..=8)
            .map(|n| positions.slots.lock().contains_key(&key(n)))
            .collect();
        assert_eq!(
            kept,
            [true, true, false, false, false, true, true, true],
            "devices 1 and 2 stay however old; 3, 4 and 5 pulled longest ago"
        );
        drop(busy);

        // A device let go comes back with the position the store has.
        let back = positions.lock(key(4)).await.expect("lock");
        assert_eq!(back.state(), Some(&state(4)));
        drop(back);
        store.close().await;
    }
}
