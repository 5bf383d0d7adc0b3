//! Small helpers shared by the server's background tasks.

use tokio::sync::watch;

/// Resolves once the flag is set (or its sender is gone).
pub async fn stopped(flag: &mut watch::Receiver<bool>) {
    loop {
        if *flag.borrow_and_update() {
            return;
        }
        if flag.changed().await.is_err() {
            return;
        }
    }
}
