//! The swarm: nodes that find each other over libp2p and run rounds together.
//!
//! - [`wire`]: the signed, versioned messages and the gate every message passes;
//! - [`limits`]: what one peer may cost a node (message budgets, member rounds);
//! - [`net`]: transports, discovery, gossip and request-response (one task owns libp2p);
//! - [`expertise`]: what a node answers and judges with (its plugins, or a simulation);
//! - [`node`]: the libp2p driver of the round engine (`crate::round`) as entry node,
//!   and the member's side of the protocol;
//! - [`sim`]: many nodes in one process over the in-memory transport.
//!
//! The consensus arithmetic lives in [`crate::consensus`] and the record of each round in
//! [`crate::ledger`]; the protocol
//! itself in [`crate::round::engine`]; this module only moves messages and keeps time.

pub mod expertise;
pub mod limits;
pub mod net;
pub mod node;
pub mod sim;
pub mod watch;
pub mod wire;

pub use expertise::{Expertise, PluginSet, Plugins, Volunteer, Work};
pub use limits::{Limits, Rate};
pub use net::{NetConfig, NetStats};
pub use node::{Node, Persona, Progress, RoundFailure, RoundResult, RoundSettings};
