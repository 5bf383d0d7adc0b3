//! The import: every existing record of a model, read once in pages by id.
//!
//! Resumable: after each page is in the log, the last id read is saved; a restart reads on
//! from there. A page read twice (a crash between its append and the save) stores nothing
//! twice: its versions are duplicates. Before the first page, the sweep's starting point is
//! set to now (minus the overlap), so whatever changes during the import is swept afterwards.

use chrono::Utc;
use serde_json::json;

use super::state::{self, ModelState};
use super::{Model, Source, SyncError, append, odoo_time};
use crate::event::now_rfc3339;

/// Where an import is, for its progress.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub read: u64,
    pub stored: u64,
    /// Records Odoo counted when the import (or its resumption) began, archived ones included.
    pub total: u64,
}

/// Runs (or resumes) the import of `model`, saving `state` as it goes and telling `progress`
/// after each page.
pub async fn run(
    source: &Source,
    model: &Model<'_>,
    overlap: chrono::Duration,
    state: &mut ModelState,
    mut progress: impl FnMut(Progress),
) -> Result<(), SyncError> {
    if state.import_started_at.is_none() {
        state.import_started_at = Some(now_rfc3339());
        state.fields = model.settings.read_fields();
        state.import_after = 0;
        state.import_read = 0;
        state.import_stored = 0;
    }
    if state.sweep_from.is_none() {
        state.sweep_from = Some(odoo_time(Utc::now() - overlap));
    }
    state::save(source.store.as_ref(), model.name, state).await?;
    let fields = model.settings.read_fields();
    let left = source
        .client
        .search_count(model.name, json!([["id", ">", state.import_after]]))
        .await?;
    let total = state.import_read + left;
    progress(Progress {
        read: state.import_read,
        stored: state.import_stored,
        total,
    });
    loop {
        let records = source
            .client
            .search_read(
                model.name,
                json!([["id", ">", state.import_after]]),
                &fields,
                "id asc",
                source.page_size,
            )
            .await?;
        let Some(last) = append::last_id(model.name, state.import_after, &records)? else {
            break;
        };
        let done = append::versions(source, model, records).await?;
        state.import_after = last;
        state.import_read += done.read;
        state.import_stored += done.stored;
        state::save(source.store.as_ref(), model.name, state).await?;
        progress(Progress {
            read: state.import_read,
            stored: state.import_stored,
            total: total.max(state.import_read),
        });
    }
    state.import_finished_at = Some(now_rfc3339());
    state::save(source.store.as_ref(), model.name, state).await?;
    tracing::info!(
        model = model.name,
        read = state.import_read,
        stored = state.import_stored,
        "import finished"
    );
    Ok(())
}
