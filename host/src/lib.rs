//! # Apiary node runtime
//!
//! Apiary runs specialist model plugins (WebAssembly components) in strict sandboxes and
//! combines their answers by peer ranking: plugins that have the expertise answer, the
//! others judge pairs of answers, and a Bradley–Terry fit over the verdicts picks the
//! answer.
//!
//! - [`bindings`]: the host-side bindings generated from the WIT contract (a leaf);
//! - [`sandbox`]: the wasmtime engine, limits, the WASI context and sandboxed calls;
//! - [`plugins`]: plugin folders, manifests, compile cache, hot reload, audits;
//! - [`consensus`]: pure functions for pair assignment and the Bradley–Terry fit;
//! - [`ledger`]: node identity, signed round transcripts, the SQLite ledger;
//! - [`keyfile`]: secret key files (the node key, the author key), written whole and 0600;
//! - [`package`]: signed plugin packages (`NAME-VERSION.apiary`): pack, verify, install;
//! - [`round`]: a round among the plugins of one node;
//! - [`tensor`]: host-owned tensors, weights files and the CPU kernels plugins call;
//! - [`swarm`]: libp2p networking and the round protocol between nodes;
//! - [`api`]: the OpenAI-compatible HTTP API a node serves;
//! - [`bank`]: a node's own known-answer rounds, from the operator's bank of items;
//! - [`eval`]: datasets with known answers through rounds, and how the swarm scores;
//! - [`author`]: a plugin author's commands: a crate from a template, its build, and the
//!   conformance check that shows a node's view of the plugin.
//!
//! The boundary every plugin lives behind is documented, line by line with the test that
//! proves it, in `SECURITY.md` at the repository root.

pub mod api;
pub mod author;
pub mod bank;
pub mod bindings;
pub mod consensus;
pub mod eval;
pub mod governor;
pub mod keyfile;
pub mod ledger;
pub mod metrics;
pub mod package;
pub mod plugins;
pub mod round;
pub mod sandbox;
pub mod swarm;
pub mod tensor;
