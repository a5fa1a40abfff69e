//! Plugins on disk: manifests, loading, the compile cache, the live registry (hot
//! reload), and audits.

pub mod audit;
pub mod cache;
pub mod loader;
pub mod manifest;
pub mod registry;
pub mod safe_read;

pub use cache::CompileCache;
pub use loader::{LoadError, Plugin};
pub use registry::{DEFAULT_LOAD_BUDGET, DEFAULT_QUARANTINE_AFTER, Registry, ScanReport};
