//! What the store keeps of a device: where it is in the log, per (user_id, device_id,
//! app_type). Kept in memory and flushed in batches by [`crate::positions`].

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
    /// How far compaction had gone when the device began reading the log from its start (see
    /// `token::Cursor::tombstone_mark`; 0: any deletion dropped after its position may be one
    /// it needed).
    pub tombstone_mark: i64,
}
