//! What every backend stores the same way: the keys of `log_meta`, and how an event's folded
//! history is kept in its two columns.

use crate::event::Folded;

/// The keys of `log_meta` (see [`super::LogMeta`]).
pub mod meta {
    pub const PRUNED_THROUGH: &str = "pruned_through";
    pub const COMPACTED_THROUGH: &str = "compacted_through";
    pub const TOMBSTONES_CHECKED_THROUGH: &str = "tombstones_checked_through";
    pub const TOMBSTONES_DROPPED_THROUGH: &str = "tombstones_dropped_through";
}

/// The folded history of an event, as its two columns (`folded_from`, `folded_at`) keep it.
pub fn folded_of(from: Option<i64>, at: Option<i64>) -> Option<Folded> {
    Some(Folded {
        from: from?,
        at: at.unwrap_or(0),
    })
}
