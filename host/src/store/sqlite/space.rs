//! Whether the database's disk is full, and saying so once.
//!
//! An append that SQLite refuses with SQLITE_FULL sets the state; the next append that succeeds,
//! or a readiness check that finds [`ROOM_AGAIN_BYTES`] free beside the database, clears it
//! (so that a server taken out of rotation for a full disk comes back once space is freed, with
//! no ingest to tell it). The log says "full" when it fills and "room again" when it clears, at
//! most once a minute, however often a nearly full disk flips between the two.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::store::StoreError;

/// Free space beside the database that counts as room again without an append to prove it.
pub(super) const ROOM_AGAIN_BYTES: u64 = 64 * 1024 * 1024;

/// How often at most the disk is said to be full in the log.
const SAY_FULL_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(super) struct Space {
    full: AtomicBool,
    /// When the log last said the disk was full, and whether "room again" is owed since.
    said: Mutex<(Option<Instant>, bool)>,
    /// The directory of the database, whose file system is measured.
    dir: PathBuf,
}

impl Space {
    pub(super) fn new(dir: PathBuf) -> Space {
        Space {
            full: AtomicBool::new(false),
            said: Mutex::new((None, false)),
            dir,
        }
    }

    /// What an append came to: done, or refused with this error.
    pub(super) fn note(&self, result: Result<(), &StoreError>) {
        match result {
            Err(e) if e.is_storage_full() => {
                if !self.full.swap(true, Ordering::SeqCst) {
                    let mut said = self.said.lock();
                    if said.0.is_none_or(|at| at.elapsed() >= SAY_FULL_EVERY) {
                        *said = (Some(Instant::now()), true);
                        tracing::error!(
                            error = %e,
                            "the database's disk is full: ingest answers 503 storage_full, \
                             /readyz fails and device positions wait in memory until space is \
                             freed; nothing acknowledged is lost"
                        );
                    }
                }
            }
            Ok(()) => self.room_again(),
            Err(_) => {}
        }
    }

    /// Whether the disk is full: set by a refused append, and checked against the free space
    /// beside the database while it is.
    pub(super) fn is_full(&self) -> bool {
        if !self.full.load(Ordering::SeqCst) {
            return false;
        }
        if free_bytes(&self.dir).is_some_and(|free| free >= ROOM_AGAIN_BYTES) {
            self.room_again();
            return false;
        }
        true
    }

    fn room_again(&self) {
        if self.full.swap(false, Ordering::SeqCst) {
            let mut said = self.said.lock();
            if said.1 {
                said.1 = false;
                tracing::info!("the database's disk has room again: events are stored again");
            }
        }
    }
}

/// The bytes an unprivileged process may still write on the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        let stat = rustix::fs::statvfs(dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}
