//! One server per SQLite file.
//!
//! The embedded store has one writer by design: the server numbers events itself, keeps the
//! log's tail in memory and wakes its own waiting pulls. A second server on the same file would
//! number events the first has numbered too, and neither would see the other's. So a server
//! holds an exclusive lock on `<database>.lock` for as long as it runs, and writes its process
//! id there so that the one that cannot start can name it. The lock is the operating system's
//! (`flock`): it goes with the process however it ends, and the file left behind means nothing.
//! Tools that only read (`smartsync plugin replay`) do not take it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// The lock of one database file, held until dropped.
#[derive(Debug)]
pub(super) struct WriterLock {
    _file: File,
}

/// Where the lock of the database at `database` is kept.
pub(super) fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl WriterLock {
    /// Takes the lock of the database at `database`, or says which process holds it.
    pub(super) fn take(database: &Path) -> Result<WriterLock, StoreError> {
        let path = lock_path(database);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| StoreError::Setup(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let by = if holder.is_empty() {
                    "another smartsync server".to_string()
                } else {
                    format!("another smartsync server ({holder})")
                };
                return Err(StoreError::InUse(format!(
                    "the database {} is in use by {by}, which holds {}. The embedded SQLite \
                     store has one server: stop the other one, or give this one another \
                     database.url. Tools that only read, such as `smartsync plugin replay`, \
                     may run beside it.",
                    database.display(),
                    path.display()
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Setup(format!(
                    "cannot lock {}: {e}",
                    path.display()
                )));
            }
        }
        // Who holds it, for the next one that tries. Failing to say so does not matter.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "pid {}", std::process::id()));
        Ok(WriterLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_first_holder_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let database = dir.path().join("log.db");
        let first = WriterLock::take(&database).expect("first lock");
        let refused = WriterLock::take(&database).expect_err("second lock");
        let message = refused.to_string();
        assert!(matches!(refused, StoreError::InUse(_)), "{refused:?}");
        assert!(
            message.contains(&database.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        WriterLock::take(&database).expect("free again once the first is dropped");
    }
}
