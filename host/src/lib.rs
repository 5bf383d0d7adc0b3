//! Smart Sync: an event log of Odoo record changes, and the API apps pull them through.
//!
//! Odoo posts changes (`ingest`, and Odoo's webhooks in `odoo::webhook`) into the log (`log`,
//! stored by `store`); the server also reads Odoo itself (`odoo`: import, sweep, ids check), so
//! that nothing a webhook lost is missed. Devices pull what their app_type's feed lets through
//! (`sync`), and the server remembers where each device is (`positions`); `retention` compacts
//! or prunes old events. `http` is the HTTP surface; `server` starts and stops it all.

pub mod app;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod event;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod log;
pub mod odoo;
pub mod plugin;
pub mod positions;
pub mod retention;
pub mod secrets;
pub mod server;
pub mod store;
pub mod sync;
pub mod token;
mod util;

pub use config::Config;
pub use server::{Server, start, start_on};
