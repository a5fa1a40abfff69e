//! `plugin.toml`: what an operator or author declares about a plugin. Unknown keys are an
//! error (a typo in a limit must not silently fall back to the default).

use super::safe_read::excerpt;
use crate::sandbox::limits::RequestedLimits;
use serde::{Deserialize, Serialize};

/// The file name looked for in each plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";
/// Largest `plugin.toml` read (a real one is a few hundred bytes).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 10;
/// Longest parser message quoted in an error (the line and column are always kept).
const MAX_ERROR_CHARS: usize = 300;

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
        let m: PluginManifest = toml::from_str(src).map_err(|e| toml_error(src, &e))?;
        if let Some(w) = &m.wasm
            && (w.contains(['/', '\\'])
                || w == ".."
                || w == "."
                || w.is_empty()
                || w.len() > 255
                || w.chars().any(char::is_control))
        {
            return Err(format!(
                "`wasm = \"{}\"` must be a file name (at most 255 bytes) inside the plugin folder",
                excerpt(w, 64)
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

/// A TOML error for a message: where it is (line and column) and toml's own message, cut
/// to [`MAX_ERROR_CHARS`], with a short piece of the text around the problem. toml's
/// `Display` quotes the whole offending line, which may be megabytes long.
fn toml_error(src: &str, e: &toml::de::Error) -> String {
    let message = excerpt(e.message(), MAX_ERROR_CHARS);
    let Some(at) = e.span().map(|s| s.start.min(src.len())) else {
        return message;
    };
    let at = (0..=at)
        .rev()
        .find(|&i| src.is_char_boundary(i))
        .unwrap_or(0);
    let line_start = src[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = src[..line_start].matches('\n').count() + 1;
    let column = src[line_start..at].chars().count() + 1;
    let before: String = {
        let mut b: Vec<char> = src[line_start..at].chars().rev().take(20).collect();
        b.reverse();
        b.into_iter().collect()
    };
    let after: String = src[at..]
        .chars()
        .take_while(|&c| c != '\n')
        .take(40)
        .collect();
    let near = excerpt(&format!("{before}{after}"), 60);
    if near.trim().is_empty() {
        format!("line {line}, column {column}: {message}")
    } else {
        format!("line {line}, column {column}: {message} (near `{near}`)")
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

    #[test]
    fn errors_quote_only_a_short_excerpt() {
        // One huge bad line: toml's own Display would quote all of it.
        let src = format!(
            "name = \"x\"\nwasm = [{}\n",
            "\"\u{1b}[2J\", ".repeat(20_000)
        );
        let e = PluginManifest::parse(&src).unwrap_err();
        assert!(
            e.len() < 600,
            "{} bytes: {}",
            e.len(),
            &e[..600.min(e.len())]
        );
        assert!(e.starts_with("line 2, column "), "{e}");
        assert!(!e.contains('\u{1b}') && !e.contains('\n'), "{e:?}");
        let full = toml::from_str::<PluginManifest>(&src)
            .unwrap_err()
            .to_string();
        assert!(
            full.len() > 100_000,
            "the case must be one toml would flood"
        );

        let key = "k".repeat(50_000);
        let e = PluginManifest::parse(&format!("{key} = 1\n")).unwrap_err();
        assert!(e.len() < 600 && e.starts_with("line 1, column 1"), "{e}");

        let e = PluginManifest::parse("name = [unclosed\n").unwrap_err();
        assert!(e.starts_with("line 1, column "), "{e}");

        let e = PluginManifest::parse(&format!("wasm = \"{}.wasm\"\n", "w".repeat(10_000)))
            .unwrap_err();
        assert!(e.len() < 200 && e.contains("at most 255 bytes"), "{e}");
        assert!(PluginManifest::parse("wasm = \"a\\u001bb.wasm\"").is_err());
    }
}
