//! contactq: a persistent outbound send-queue daemon for the Green API `sendContact`.
//!
//! The modules, and which way the imports run: `cli` talks only to the socket;
//! `daemon` wires `api`, `drain`, `store` and `config`; `api` → `store`, `contact`;
//! `drain` → `store`, `upstream`; `store` → `contact`; `sandbox` shares only `contact` and `state`. The domain
//! (`contact`, `state`, `ids`) imports nothing else of ours.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod contact;
pub mod daemon;
pub mod demo;
pub mod drain;
pub mod ids;
pub mod lines;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod protocol;
pub mod sandbox;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod upstream;
