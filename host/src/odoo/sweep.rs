//! The sweep: what Odoo changed since the last sweep began, read back.
//!
//! Each sweep reads the records whose `write_date` is at or after `sweep_from`, in pages by id,
//! and appends the versions the log does not hold; those are changes whose webhook Odoo lost
//! (or sent while this server was down). Then `sweep_from` becomes the sweep's start minus
//! `sweep_overlap`.
//!
//! Why nothing is missed: Odoo sets `write_date` to its transaction's start, and a change
//! becomes readable at its commit. A version committed after a sweep began has a `write_date`
//! no earlier than the sweep's start minus the transaction's length (and the clocks'
//! difference), which the overlap covers; the next sweep reads it. A version committed before
//! the sweep began is read by it, unless a newer version replaced it, which is then the one
//! that counts. Pages go by id, which does not move while records change.

use chrono::Utc;
use serde_json::json;

use super::state::{self, ModelState};
use super::{Model, Source, SyncError, append, odoo_time};
use crate::event::now_rfc3339;

/// What one sweep of one model did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Records Odoo answered.
    pub read: u64,
    /// Versions the log did not hold: recovered.
    pub recovered: u64,
}

pub async fn run(
    source: &Source,
    model: &Model<'_>,
    overlap: chrono::Duration,
    state: &mut ModelState,
) -> Result<Swept, SyncError> {
    let started = Utc::now();
    let from = state
        .sweep_from
        .clone()
        .unwrap_or_else(|| odoo_time(started - overlap));
    let fields = model.settings.read_fields();
    let mut swept = Swept::default();
    let mut after = 0;
    loop {
        let records = source
            .client
            .search_read(
                model.name,
                json!([["write_date", ">=", from], ["id", ">", after]]),
                &fields,
                "id asc",
                source.page_size,
            )
            .await?;
        let Some(last) = append::last_id(model.name, after, &records)? else {
            break;
        };
        after = last;
        let done = append::versions(source, model, records).await?;
        swept.read += done.read;
        swept.recovered += done.stored;
    }
    state.sweep_from = Some(odoo_time(started - overlap));
    state.last_sweep_at = Some(now_rfc3339());
    state.last_sweep_recovered = swept.recovered;
    state.sweep_recovered += swept.recovered;
    state::save(source.store.as_ref(), model.name, state).await?;
    if swept.recovered > 0 {
        tracing::warn!(
            model = model.name,
            recovered = swept.recovered,
            "the sweep found changes no webhook delivered"
        );
    }
    Ok(swept)
}
