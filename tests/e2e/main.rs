//! The end-to-end tests: real `nightcast-*` processes on loopback and in network namespaces.
//!
//! One test binary, one module per subject (`cargo test --test e2e trust::` runs one), so the
//! whole dependency graph (QUIC, TLS, SQLite) is linked once rather than once per file. Every
//! test starts its own processes in its own temporary directories, on its own ports, and changes
//! nothing of this process (no environment variable, no current directory; a thread that enters a
//! network namespace is one the test spawned for it), so they run side by side like any tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fleet;
mod netns;
mod rogue;
mod util;
mod webdriver;

mod admin_api;
mod agents;
mod alerts;
mod calendar_feed;
mod calendar_rules;
mod calendar_sync;
mod calendar_vtimezone;
mod cli_surface;
mod cli_undo;
mod console;
mod demo_real_vm;
mod enrol_and_fetch;
mod help_texts;
mod import_checks;
mod import_progress;
mod kiosk_page;
mod lunchtime_push;
mod manifest_delta;
mod metrics;
mod netns_fleet;
mod peers;
mod profiles;
mod relay_daemon;
mod room_fill;
mod seats;
mod session_io;
mod session_origin;
mod store_migration;
mod tighten;
mod trust;
mod two_relays;
mod verdicts;
mod workstation;
