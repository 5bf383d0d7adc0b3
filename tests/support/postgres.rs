//! PostgreSQL for the tests: a fresh database per test on the server `scripts/postgres` found
//! or started (`$SMARTSYNC_TEST_DATABASE_URL`), dropped when the test is done.

use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::Connection;

/// The server's URL: `$SMARTSYNC_TEST_DATABASE_URL`, else this machine's default server.
pub fn server_url() -> String {
    std::env::var("SMARTSYNC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        let server = server_url();
        let name = format!(
            "smartsync_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "no PostgreSQL at {server} ({e}): run the tests with scripts/test, which finds or \
                 starts one, or set SMARTSYNC_TEST_DATABASE_URL"
            )
        });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        let _ = admin.close().await;
        let mut url = reqwest::Url::parse(&server).expect("a database URL");
        url.set_path(&format!("/{name}"));
        TestDatabase {
            url: url.to_string(),
            name,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let server = server_url();
        let name = self.name.clone();
        // Drop runs outside any runtime it could await in: a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut admin)
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}
