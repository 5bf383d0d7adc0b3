//! The stores, SQLite and PostgreSQL, held to the same behaviour through the `EventStore`
//! trait: numbering, dedupe rules, reads, devices, sources, pruning; and, for PostgreSQL,
//! several hosts appending to one log at once while readers follow it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use smartsync::event::{DedupeKey, EventKind, NewEvent};
use smartsync::store::{self, Access, DeviceKey, DeviceState, EventStore, Settings};
use smartsync_tests::postgres::TestDatabase;

/// A store under test, and what keeps its database alive.
struct Backend {
    name: &'static str,
    url: String,
    _keep: Keep,
}

enum Keep {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Database(#[allow(dead_code)] TestDatabase),
}

impl Backend {
    async fn all() -> Vec<Backend> {
        let dir = tempfile::tempdir().expect("tempdir");
        let sqlite = format!("sqlite://{}/log.db", dir.path().display());
        let database = TestDatabase::create().await;
        vec![
            Backend {
                name: "sqlite",
                url: sqlite,
                _keep: Keep::Dir(dir),
            },
            Backend {
                name: "postgres",
                url: database.url.clone(),
                _keep: Keep::Database(database),
            },
        ]
    }

    async fn open(&self) -> Arc<dyn EventStore> {
        let settings = Settings {
            url: self.url.clone(),
            synchronous: "normal".into(),
            max_connections: 4,
        };
        store::open(&settings, Access::Write)
            .await
            .unwrap_or_else(|e| panic!("{}: open: {e}", self.name))
    }
}

fn event(model: &str, record_id: i64, key: Option<DedupeKey>, time: &str) -> NewEvent {
    NewEvent {
        model: model.into(),
        record_id,
        kind: EventKind::Write,
        timestamp: time.into(),
        payload: Some(format!(r#"{{"id":{record_id},"t":"{time}"}}"#)),
        changed_fields: None,
        dedupe_key: key,
        received_at: time.into(),
    }
}

/// (id, duplicate) of each event of each batch, the batches queued together.
async fn append(store: &dyn EventStore, batches: Vec<Vec<NewEvent>>) -> Vec<Vec<(i64, bool)>> {
    let results = store
        .append(batches.into_iter().map(Arc::new).collect())
        .await;
    results
        .into_iter()
        .map(|batch| {
            batch
                .expect("batch appended")
                .into_iter()
                .map(|a| (a.id, a.duplicate))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn appends_are_numbered_in_order_and_keys_are_stored_once() {
    for backend in Backend::all().await {
        let store = backend.open().await;
        let t = "2024-01-15T10:30:00Z";
        let key = |k: &str| Some(DedupeKey::Event(k.into()));
        let answers = append(
            store.as_ref(),
            vec![
                vec![
                    event("sale.order", 1, key("a"), t),
                    event("sale.order", 2, None, t),
                ],
                vec![event("sale.order", 3, key("a"), t)],
                vec![event("res.partner", 4, key("b"), t)],
            ],
        )
        .await;
        assert_eq!(
            answers,
            [
                vec![(1, false), (2, false)],
                vec![(1, true)],
                vec![(3, false)]
            ],
            "{}",
            backend.name
        );
        assert_eq!(store.last_event_id().await.expect("last"), 3);
        let answers = append(store.as_ref(), vec![vec![event("x.y", 5, key("b"), t)]]).await;
        assert_eq!(answers, [vec![(3, true)]], "{}", backend.name);
        let orders = ["sale.order".to_string()];
        let read = store
            .read_after(0, 3, Some(&orders), 10)
            .await
            .expect("read");
        assert_eq!(
            read.iter().map(|e| e.id).collect::<Vec<_>>(),
            [1, 2],
            "{}",
            backend.name
        );
        assert_eq!(store.count_after(1, None).await.expect("count"), 2);
        assert_eq!(store.count_after(0, Some(&orders)).await.expect("count"), 2);
        let newest = store.newest(2).await.expect("newest");
        assert_eq!(newest.iter().map(|e| e.id).collect::<Vec<_>>(), [2, 3]);
        // The store derived the prior of a record's second event from its first.
        assert_eq!(read[0].record_id, 1);
        store.close().await;
    }
}

#[tokio::test]
async fn record_versions_follow_the_same_dedupe_rules() {
    for backend in Backend::all().await {
        let store = backend.open().await;
        let version = |v: &str, time: &str| {
            event(
                "sale.order",
                7,
                Some(DedupeKey::Version(format!("odoo:{v}"))),
                time,
            )
        };
        let t = "2024-01-15T10:30:00Z";
        let later = "2024-01-15T10:31:00Z";
        let answers = append(
            store.as_ref(),
            vec![
                vec![version("A", t)],
                vec![version("A", t)],
                vec![version("B", t), version("A", t)],
                vec![version("A", t)],
            ],
        )
        .await;
        // A again while newest: a retry; after B from the same second: the record changed back.
        assert_eq!(
            answers,
            [
                vec![(1, false)],
                vec![(1, true)],
                vec![(2, false), (3, false)],
                vec![(3, true)]
            ],
            "{}",
            backend.name
        );
        let answers = append(
            store.as_ref(),
            vec![vec![version("C", later)], vec![version("B", t)]],
        )
        .await;
        assert_eq!(
            answers,
            [vec![(4, false)], vec![(2, true)]],
            "{}",
            backend.name
        );
        let deletion = NewEvent {
            kind: EventKind::Unlink,
            ..version("D", later)
        };
        let answers = append(
            store.as_ref(),
            vec![
                vec![deletion],
                vec![version("C", later)],
                vec![version("new", t)],
            ],
        )
        .await;
        assert_eq!(
            answers,
            [vec![(5, false)], vec![(4, true)], vec![(5, true)]],
            "{}",
            backend.name
        );
        let heads = store
            .record_heads("sale.order", 0, 10)
            .await
            .expect("heads");
        assert_eq!(heads.len(), 1);
        assert_eq!((heads[0].event_id, heads[0].kind), (5, EventKind::Unlink));
        // The record comes back; within one batch it changes and changes back (the key moves
        // from an event of the same batch), then an older post arrives.
        let even_later = "2024-01-15T10:32:00Z";
        let answers = append(
            store.as_ref(),
            vec![
                vec![
                    version("E", even_later),
                    version("F", even_later),
                    version("E", even_later),
                    version("E", even_later),
                ],
                vec![version("F", even_later), version("G", later)],
            ],
        )
        .await;
        assert_eq!(
            answers,
            [
                vec![(6, false), (7, false), (8, false), (8, true)],
                vec![(9, false), (9, true)]
            ],
            "{}",
            backend.name
        );
        let heads = store
            .record_heads_of("sale.order", &[7, 8])
            .await
            .expect("heads");
        assert_eq!(heads.iter().map(|h| h.record_id).collect::<Vec<_>>(), [7]);
        store.close().await;
    }
}

#[tokio::test]
async fn devices_sources_and_pruning_are_kept() {
    for backend in Backend::all().await {
        let store = backend.open().await;
        let t = "2024-01-15T10:30:00Z";
        let batch: Vec<NewEvent> = (1..=10).map(|i| event("sale.order", i, None, t)).collect();
        append(store.as_ref(), vec![batch]).await;
        let key = DeviceKey {
            user_id: 5,
            device_id: "ios-1".into(),
            app_type: "sales_app".into(),
        };
        let state = DeviceState {
            position: 4,
            sync_count: 2,
            first_sync_time: t.into(),
            last_sync_time: t.into(),
            feed_epoch: u64::MAX - 1,
            tombstone_mark: 3,
        };
        store
            .save_devices(&[(key.clone(), state.clone())])
            .await
            .expect("save");
        assert_eq!(
            store.load_device(&key).await.expect("load"),
            Some(state),
            "{}",
            backend.name
        );
        store
            .save_source("odoo:x", "{\"a\":1}")
            .await
            .expect("source");
        store
            .save_source("odoo:x", "{\"a\":2}")
            .await
            .expect("source");
        assert_eq!(
            store.sources().await.expect("sources"),
            [("odoo:x".to_string(), "{\"a\":2}".to_string())]
        );
        assert_eq!(store.prune(4).await.expect("prune"), 4, "{}", backend.name);
        assert_eq!(store.log_meta().await.expect("meta").pruned_through, 4);
        assert_eq!(store.count_after(0, None).await.expect("count"), 6);
        // Ids go on after the pruned ones, and after a restart.
        store.close().await;
        let store = backend.open().await;
        let answers = append(store.as_ref(), vec![vec![event("sale.order", 1, None, t)]]).await;
        assert_eq!(answers, [vec![(11, false)]], "{}", backend.name);
        assert_eq!(
            store
                .received_before(0, "2024-01-15T10:31:00Z")
                .await
                .expect("cutoff"),
            11
        );
        store.close().await;
    }
}

/// Several hosts (stores on one PostgreSQL database), each with several writers appending at
/// once, while readers follow the log by position as devices do: every reader must see every
/// id, once, in order. Ids are contiguous (nothing is pruned), so a reader that ever sees an id
/// that is not its last plus one has skipped one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_appending_at_once_are_read_in_order_with_nothing_skipped() {
    const HOSTS: usize = 3;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 400;
    let database = TestDatabase::create().await;
    let backend = Backend {
        name: "postgres",
        url: database.url.clone(),
        _keep: Keep::Database(database),
    };
    let mut hosts = Vec::new();
    for _ in 0..HOSTS {
        hosts.push(backend.open().await);
    }
    let total = HOSTS * WRITERS * PER_WRITER;
    let mut writers = Vec::new();
    for (h, host) in hosts.iter().enumerate() {
        for w in 0..WRITERS {
            let host = host.clone();
            writers.push(tokio::spawn(async move {
                for n in 0..PER_WRITER {
                    let record = (h * 1_000_000 + w * 10_000 + n) as i64;
                    let results = host
                        .append(vec![Arc::new(vec![event(
                            "sale.order",
                            record,
                            None,
                            "2024-01-15T10:30:00Z",
                        )])])
                        .await;
                    for result in results {
                        result.expect("appended");
                    }
                }
            }));
        }
    }
    let mut readers = Vec::new();
    for host in hosts.iter().take(2) {
        let host = host.clone();
        readers.push(tokio::spawn(async move {
            let mut position = 0;
            let mut seen = 0;
            while seen < total {
                let events = host
                    .read_after(position, i64::MAX, None, 97)
                    .await
                    .expect("read");
                for e in &events {
                    assert_eq!(e.id, position + 1, "an event skipped or reordered");
                    position = e.id;
                    seen += 1;
                }
                if events.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            position
        }));
    }
    for writer in writers {
        writer.await.expect("writer");
    }
    for reader in readers {
        assert_eq!(reader.await.expect("reader"), total as i64);
    }
    let all = hosts[0]
        .read_after(0, i64::MAX, None, total + 10)
        .await
        .expect("read all");
    let records: BTreeSet<i64> = all.iter().map(|e| e.record_id).collect();
    assert_eq!(
        (all.len(), records.len()),
        (total, total),
        "each event once"
    );
    for host in hosts {
        host.close().await;
    }
}

/// The same history, compacted and its tombstones dropped, leaves the same log on both stores.
#[tokio::test]
async fn compaction_leaves_the_same_log_on_every_store() {
    let mut logs = Vec::new();
    for backend in Backend::all().await {
        let store = backend.open().await;
        let at = |s: u32| format!("2024-01-15T10:{s:02}:00Z");
        let change = |record: i64, kind: EventKind, fields: &str, s: u32| NewEvent {
            kind,
            payload: (kind != EventKind::Unlink).then(|| fields.to_string()),
            ..event("sale.order", record, None, &at(s))
        };
        use EventKind::{Create, Unlink, Write};
        let history = vec![
            change(1, Create, r#"{"id":1,"state":"draft","user_id":5}"#, 1),
            change(2, Create, r#"{"id":2,"state":"draft"}"#, 2),
            change(1, Write, r#"{"id":1,"state":"sale","user_id":5}"#, 3),
            change(2, Unlink, "", 4),
            change(1, Write, r#"{"id":1,"state":"done","user_id":6}"#, 5),
            change(3, Create, r#"{"id":3,"state":"draft"}"#, 6),
        ];
        append(store.as_ref(), vec![history]).await;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let noted = seen.clone();
        let step = store
            .compact(
                0,
                5,
                Box::new(move |changes| {
                    noted
                        .lock()
                        .expect("lock")
                        .extend(changes.dropped.iter().copied());
                }),
            )
            .await
            .expect("compact");
        assert_eq!((step.dropped, step.rewritten), (3, 2), "{}", backend.name);
        assert_eq!(*seen.lock().expect("lock"), [1, 3, 2], "{}", backend.name);
        let step = store
            .drop_tombstones(0, 6, Box::new(|_| {}))
            .await
            .expect("drop tombstones");
        assert_eq!(step.dropped, 1, "{}", backend.name);
        let meta = store.log_meta().await.expect("meta");
        assert_eq!(
            (meta.compacted_through, meta.tombstones_dropped_through),
            (5, 4),
            "{}",
            backend.name
        );
        logs.push(
            store
                .read_after(0, i64::MAX, None, 100)
                .await
                .expect("read"),
        );
        store.close().await;
    }
    assert_eq!(
        logs[0], logs[1],
        "SQLite and PostgreSQL differ after compaction"
    );
    assert_eq!(
        logs[0].iter().map(|e| e.id).collect::<Vec<_>>(),
        [5, 6],
        "each record's newest event stays"
    );
}
