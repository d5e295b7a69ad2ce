//! contactq: a persistent outbound send-queue daemon for the Green API `sendContact`.
//!
//! The modules, and which way the imports run: `cli` talks only to the socket;
//! `daemon` wires `api`, `drain`, `store` and `config`; `api` → `store`, `contact`;
//! `drain` → `store`, `upstream`; `store` → `contact`; `sandbox` shares only `contact`
//! and `state`. The domain (`contact`, `state`, `ids`) imports nothing else of ours.
//!
//! Public are only the modules `main.rs`, the black-box tests and the benchmarks
//! reach (the CLI's client, the daemon, the store, the sandbox, …); the rest is private
//! to the crate, so the compiler reports what nothing uses.

mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contact;
pub mod daemon;
pub mod demo;
mod drain;
pub mod event;
mod hooks;
mod ids;
mod lines;
pub mod logging;
pub mod metrics;
mod notify;
mod protocol;
mod quiet;
pub mod sandbox;
pub mod sharing;
mod shutdown;
mod state;
pub mod store;
#[doc(hidden)]
pub mod test_postgres;
mod upstream;
