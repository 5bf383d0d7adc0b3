//! End-to-end tests: the real server over HTTP, on a real SQLite file.

mod cli;
mod compaction;
mod convergence;
mod durability;
mod feeds;
mod full_disk;
mod http_surface;
mod ingest;
mod longpoll;
mod odoo_auth;
mod odoo_convergence;
mod odoo_sync;
mod plugins;
mod pull;
mod retention;
mod seed_clients;
mod seed_python;
mod stream;
