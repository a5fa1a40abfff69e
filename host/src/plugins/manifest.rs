//! `plugin.toml`: what an operator or author declares about a plugin. Unknown keys are an
//! error (a typo in a limit must not silently fall back to the default).

use crate::sandbox::limits::RequestedLimits;
use serde::{Deserialize, Serialize};

/// The file name looked for in each plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PluginManifest {
    /// Overrides the name the plugin reports from `describe`.
    pub name: Option<String>,
    pub version: Option<String>,
    pub description: Option<String>,
    /// The component file inside the folder; by default the folder's only `.wasm` file.
    pub wasm: Option<String>,
    /// Overrides the domains the plugin reports from `describe`.
    pub domains: Option<Vec<String>>,
    /// Limits the plugin asks for, granted up to the operator's ceilings.
    #[serde(default)]
    pub limits: RequestedLimits,
}

impl PluginManifest {
    pub fn parse(src: &str) -> Result<Self, String> {
        let m: PluginManifest = toml::from_str(src).map_err(|e| e.to_string())?;
        if let Some(w) = &m.wasm
            && (w.contains(['/', '\\']) || w == ".." || w == "." || w.is_empty())
        {
            return Err(format!(
                "`wasm = {w:?}` must be a file name inside the plugin folder"
            ));
        }
        if let Some(n) = &m.name
            && (n.trim().is_empty() || n.len() > 64 || n.chars().any(char::is_control))
        {
            return Err("`name` must be 1–64 printable characters".into());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_manifest() {
        let m = PluginManifest::parse(
            r#"
            name = "arith"
            version = "0.1.0"
            wasm = "arith.wasm"
            domains = ["math"]
            [limits]
            answer-ms = 1000
            memory-mib = 64
            "#,
        )
        .unwrap();
        assert_eq!(m.name.as_deref(), Some("arith"));
        assert_eq!(m.limits.answer_ms, Some(1000));
        assert_eq!(m.limits.memory_mib, Some(64));
    }

    #[test]
    fn rejects_typos_and_escapes() {
        let e = PluginManifest::parse("[limits]\nmemory-mb = 64\n").unwrap_err();
        assert!(e.contains("memory-mb"), "{e}");
        assert!(PluginManifest::parse("wasm = \"../other/x.wasm\"").is_err());
        assert!(PluginManifest::parse("name = [").is_err());
        assert!(PluginManifest::parse("").is_ok());
    }
}
