//! Where each device is in the log, per (user_id, device_id, app_type).
//!
//! Positions live in memory and are written to the store in batches by a background task. A
//! crash between two flushes can only move a device back, so it receives some events again
//! (at-least-once); it never moves a device forward past an event it did not receive.
//!
//! Pulls of one device are serialized by a per-device lock, so two concurrent pulls never hand
//! out the same page twice or move the position backwards.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

use crate::store::{EventStore, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceKey {
    pub user_id: i64,
    pub device_id: String,
    pub app_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceState {
    /// The id of the last event this device has been given or deliberately skipped.
    pub position: i64,
    pub sync_count: i64,
    pub first_sync_time: String,
    pub last_sync_time: String,
    /// The version of the plugin that shaped the last pull (0: no plugin).
    pub feed_epoch: u64,
}

type Slot = Arc<tokio::sync::Mutex<Option<DeviceState>>>;

pub struct Positions {
    store: Arc<dyn EventStore>,
    slots: Mutex<HashMap<DeviceKey, Slot>>,
    /// States changed since the last flush.
    dirty: Mutex<HashMap<DeviceKey, DeviceState>>,
}

/// Exclusive access to one device's position for the length of a pull.
pub struct DeviceGuard<'a> {
    positions: &'a Positions,
    key: DeviceKey,
    slot: OwnedMutexGuard<Option<DeviceState>>,
}

impl DeviceGuard<'_> {
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
    pub async fn lock(&self, key: DeviceKey) -> Result<DeviceGuard<'_>, StoreError> {
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
            positions: self,
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
