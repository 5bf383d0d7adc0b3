//! The seed's Python background service, run unchanged but for its URLs and session, mirrors a
//! stream of Odoo webhook events into a CRM.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;
use smartsync_tests::crm::{Crm, CrmCall};
use smartsync_tests::{TestServer, session};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

async fn run_service(server: &TestServer, crm: &Crm, cycles: u32) {
    let mut command = Command::new("python3");
    command
        .arg(clients_dir().join("run_background_service.py"))
        .args([
            server.base(),
            session(2),
            "2".into(),
            crm.url.clone(),
            cycles.to_string(),
        ]);
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("python task")
        .expect("python3 is installed (scripts/test installs `requests`)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the service failed:\n{stderr}");
    assert!(!stderr.contains("Sync error"), "{stderr}");
}

#[tokio::test]
async fn the_background_service_mirrors_odoo_into_the_crm() {
    let server = TestServer::start().await;
    let crm = Crm::start().await;

    // A day of Odoo activity, as automation rules post it: creates, updates, deletes, and
    // models the service does not mirror.
    let mut expected = Vec::new();
    let mut n = 0;
    let mut post = |model: &str, id: i64, kind: &str| {
        n += 1;
        let body = json!({"_action": format!("Smart Sync {kind}(#{n})"), "_id": id,
                          "_model": model, "id": id,
                          "write_date": format!("2024-01-15 10:{:02}:{:02}", n / 60, n % 60)});
        let resource = match model {
            "res.partner" => Some("customers"),
            "sale.order" => Some("orders"),
            "product.template" => Some("products"),
            _ => None,
        };
        if let Some(resource) = resource {
            let resource = resource.to_string();
            expected.push(if kind == "unlink" {
                CrmCall::Delete { resource, id }
            } else {
                CrmCall::Upsert { resource, id }
            });
        }
        (format!("event={kind}"), body)
    };
    let mut stream = Vec::new();
    for i in 1..=80 {
        stream.push(post("res.partner", i, "create"));
        stream.push(post("sale.order", 1000 + i, "create"));
        if i % 3 == 0 {
            stream.push(post("stock.picking", 500 + i, "create"));
            stream.push(post("sale.order", 1000 + i, "write"));
        }
        if i % 5 == 0 {
            stream.push(post("product.template", 300 + i, "write"));
            stream.push(post("res.partner", i, "unlink"));
        }
    }
    for (query, body) in &stream {
        let response = server.webhook(query, body).await;
        assert_eq!(response.status(), 200);
    }
    assert!(expected.len() > 200, "more events than one page of 100");

    // The service pulls 100 events a cycle: three cycles drain the stream...
    run_service(&server, &crm, 3).await;
    assert_eq!(crm.calls(), expected, "every change mirrored, in order");
    // ...and a further cycle finds nothing and calls nothing.
    run_service(&server, &crm, 1).await;
    assert_eq!(crm.calls().len(), expected.len());
    server.stop().await;
}

#[test]
fn the_vendored_service_is_the_seed_verbatim() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/seed/smart-sync-api-v2-examples.md");
    let Ok(document) = std::fs::read_to_string(&seed) else {
        eprintln!(
            "{} is not beside the repository; nothing to compare",
            seed.display()
        );
        return;
    };
    let start = document.find("```python\n").expect("python block") + "```python\n".len();
    let end = start + document[start..].find("```").expect("end of block");
    let vendored = std::fs::read_to_string(clients_dir().join("background_sync_service.py"))
        .expect("vendored copy");
    assert_eq!(vendored, &document[start..end]);
}
