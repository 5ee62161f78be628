//! berth's HTTP API over a real TCP socket: one server per test, over its own temporary
//! directory, driven by reqwest (and by a raw socket where reqwest would normalise the path).
//!
//! One binary with a module per area keeps the link step to one.

#[path = "../common/mod.rs"]
mod common;

mod base;
mod blobs;
mod concurrency;
mod delete;
mod discovery;
mod layout;
mod listing;
mod manifests;
mod mount;
mod names;
mod read_only;
mod referrers;
mod ui;
mod uploads;
mod urls;
