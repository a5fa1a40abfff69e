//! The import allowlist: what a plugin may link against.
//!
//! A component lists everything it imports. The host refuses, at load and by name, any
//! import outside this list, instead of letting instantiation fail later or (worse)
//! defining unknown imports as traps. The list is a typed value and an empty list denies
//! everything, so a reviewer can read exactly what a plugin can reach.
//!
//! Deliberately absent: `wasi:sockets/*` (no network, no DNS) and `wasi:http/*`. The
//! WASI context is empty besides (no env, args, stdin or preopens other than
//! `/weights`), so the allowed WASI interfaces expose nothing of the host.

use serde::Serialize;
use std::fmt;

/// The WIT package of the plugin contract.
pub const CONTRACT_PACKAGE: &str = "apiary:plugin";
/// The contract version this host speaks. Plugins built against any `1.x` load.
pub const CONTRACT_VERSION: &str = "1.2.0";
pub const CONTRACT_MAJOR: u64 = 1;
/// The export every plugin must have.
pub const HANDLER_INTERFACE: &str = "handler";

/// A parsed import or export name of the form `namespace:package/interface@version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InterfaceName {
    pub package: String,
    pub interface: String,
    pub version: Option<String>,
}

impl InterfaceName {
    pub fn parse(name: &str) -> Option<InterfaceName> {
        let (path, version) = match name.split_once('@') {
            Some((p, v)) => (p, Some(v.to_string())),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        if !package.contains(':') {
            return None;
        }
        Some(InterfaceName {
            package: package.to_string(),
            interface: interface.to_string(),
            version,
        })
    }

    /// The compatibility track: the major version, or `0.minor` before 1.0.
    pub fn track(&self) -> Option<(u64, u64)> {
        let v = self.version.as_deref()?;
        let mut parts = v
            .split('.')
            .map(|p| p.split(['-', '+']).next().unwrap_or(p).parse::<u64>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(if major == 0 { (0, minor) } else { (major, 0) })
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.package, self.interface)?;
        if let Some(v) = &self.version {
            write!(f, "@{v}")?;
        }
        Ok(())
    }
}

/// One allowed interface family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowedInterface {
    pub package: &'static str,
    pub interfaces: &'static [&'static str],
    /// Compatible track, see [`InterfaceName::track`].
    pub track: (u64, u64),
    pub why: &'static str,
}

/// The allowlist. Empty means deny all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportPolicy {
    pub allowed: Vec<AllowedInterface>,
}

impl ImportPolicy {
    pub fn deny_all() -> Self {
        ImportPolicy {
            allowed: Vec::new(),
        }
    }

    /// The contract plus the WASI interfaces that Rust's standard library links against,
    /// all backed by an empty, locked-down WASI context.
    pub fn contract() -> Self {
        const WASI: (u64, u64) = (0, 2);
        ImportPolicy {
            allowed: vec![
                AllowedInterface {
                    package: CONTRACT_PACKAGE,
                    interfaces: &["log", "types", "tensor"],
                    track: (CONTRACT_MAJOR, 0),
                    why: "the plugin contract: bounded logging, shared types, host tensors and kernels",
                },
                AllowedInterface {
                    package: "wasi:io",
                    interfaces: &["error", "poll", "streams"],
                    track: WASI,
                    why: "streams for the captured stdout/stderr and the /weights files",
                },
                AllowedInterface {
                    package: "wasi:cli",
                    interfaces: &[
                        "environment",
                        "exit",
                        "stdin",
                        "stdout",
                        "stderr",
                        "terminal-input",
                        "terminal-output",
                        "terminal-stdin",
                        "terminal-stdout",
                        "terminal-stderr",
                    ],
                    track: WASI,
                    why: "empty environment and args, closed stdin, captured and capped stdout/stderr",
                },
                AllowedInterface {
                    package: "wasi:clocks",
                    interfaces: &["wall-clock", "monotonic-clock"],
                    track: WASI,
                    why: "reading time (needed by std); grants no ability to wait past the budget",
                },
                AllowedInterface {
                    package: "wasi:random",
                    interfaces: &["random", "insecure", "insecure-seed"],
                    track: WASI,
                    why: "hash-map seeds in std; replayable randomness comes from the request seed",
                },
                AllowedInterface {
                    package: "wasi:filesystem",
                    interfaces: &["types", "preopens"],
                    track: WASI,
                    why: "the single read-only preopen /weights",
                },
            ],
        }
    }

    /// Why `name` is not allowed, or `None` if it is.
    pub fn check(&self, name: &str) -> Option<String> {
        let Some(parsed) = InterfaceName::parse(name) else {
            return Some(format!(
                "import `{name}` is not an interface of a package; plugins may only import the Apiary contract and WASI"
            ));
        };
        let Some(family) = self.allowed.iter().find(|a| {
            a.package == parsed.package && a.interfaces.contains(&parsed.interface.as_str())
        }) else {
            return Some(format!(
                "import `{name}` is not in the allowlist (not part of the Apiary contract or the permitted WASI interfaces)"
            ));
        };
        match parsed.track() {
            Some(track) if track == family.track => None,
            _ if parsed.package == CONTRACT_PACKAGE => Some(format!(
                "import `{name}`: plugin was built against contract {}, this host speaks {CONTRACT_VERSION}; rebuild it with apiary-plugin-api {CONTRACT_MAJOR}.x",
                parsed.version.as_deref().unwrap_or("(unversioned)")
            )),
            _ => Some(format!(
                "import `{name}`: version {} not supported (this host provides {}.{}.x)",
                parsed.version.as_deref().unwrap_or("(none)"),
                family.track.0,
                family.track.1
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        let n = InterfaceName::parse("wasi:cli/stdout@0.2.6").unwrap();
        assert_eq!(n.package, "wasi:cli");
        assert_eq!(n.interface, "stdout");
        assert_eq!(n.track(), Some((0, 2)));
        assert_eq!(
            InterfaceName::parse("apiary:plugin/log@1.3.0")
                .unwrap()
                .track(),
            Some((1, 0))
        );
        assert!(InterfaceName::parse("bare-func").is_none());
    }

    #[test]
    fn contract_policy() {
        let p = ImportPolicy::contract();
        assert_eq!(p.check("wasi:cli/stdout@0.2.6"), None);
        assert_eq!(p.check("apiary:plugin/log@1.0.0"), None);
        assert_eq!(p.check("apiary:plugin/log@1.4.2"), None);
        assert!(
            p.check("apiary:plugin/log@2.0.0")
                .unwrap()
                .contains("built against contract 2.0.0")
        );
        assert!(
            p.check("wasi:sockets/tcp@0.2.6")
                .unwrap()
                .contains("wasi:sockets/tcp")
        );
        assert!(
            p.check("apiary:evil/backdoor")
                .unwrap()
                .contains("apiary:evil/backdoor")
        );
        assert!(p.check("wasi:cli/stdout@0.3.0").is_some());
        assert!(p.check("frobnicate").is_some());
    }

    #[test]
    fn empty_policy_denies_everything() {
        let p = ImportPolicy::deny_all();
        assert!(p.check("wasi:cli/stdout@0.2.6").is_some());
        assert!(p.check("apiary:plugin/log@1.0.0").is_some());
    }
}
