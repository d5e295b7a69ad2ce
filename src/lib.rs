//! contactq: a persistent outbound send-queue daemon for the Green API `sendContact`.
//!
//! The modules, and which way the imports run: `cli` talks only to the socket;
//! `daemon` wires `api`, `drain`, `store` and `config`; `api` → `store`, `contact`;
//! `drain` → `store`, `upstream`; `store` → `contact`; `sandbox` shares only `contact`.

pub mod contact;
pub mod protocol;
