//! A plugin author's path from an idea to a plugin a node accepts: `apiary plugins new`
//! ([`scaffold`]), `apiary plugins build` ([`build`]) and `apiary plugins check`
//! ([`check`]).
//!
//! Why in the library and not in the CLI: a check is only worth something if it loads
//! and calls the plugin through the same code a node runs (the registry's load, the
//! sandbox's sessions and limits), and the library is where that code is. The CLI files
//! only parse flags and print. The scaffold and the build are here beside it so the three
//! steps are tested together (`host/tests/author.rs` drives all three through the binary).

pub mod build;
pub mod check;
pub mod scaffold;
