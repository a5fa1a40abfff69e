//! Loading one plugin: read its folder through cap-std, compile (or fetch from the cache),
//! check every import against the allowlist and the contract version, pre-instantiate,
//! and ask it to describe itself in a trial instance.
//!
//! Plugin folders are opened as capabilities (cap-std `Dir`), so `plugin.toml`, the `.wasm`
//! and the `weights/` check cannot be tricked by symlinks into reading outside the folder.
//! Every file is read through [`super::safe_read`]: non-blocking, regular files only
//! (checked on the opened handle), and capped in size whatever its metadata says. What
//! errors quote of a folder's content (names, parser and compiler messages) is cut short
//! and stripped of control characters.

use super::cache::{CacheOutcome, CompileCache};
use super::manifest::{MANIFEST_FILE, MAX_MANIFEST_BYTES, PluginManifest};
use super::safe_read::{self, FileKind, ReadError, excerpt};
use crate::sandbox::imports::{CONTRACT_MAJOR, CONTRACT_PACKAGE, HANDLER_INTERFACE, InterfaceName};
use crate::sandbox::limits::{Clamped, Limits};
use crate::sandbox::{CallError, InstanceSpec, Sandbox, Session};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use wasmtime::component::Component;

/// Largest `.wasm` accepted.
pub const MAX_WASM_BYTES: u64 = 256 << 20;
/// Longest message from a parser, compiler or the plugin itself kept in a [`LoadError`].
const MAX_MESSAGE_CHARS: usize = 300;
/// Name of the data folder inside a plugin folder, mounted read-only at `/weights`.
pub const WEIGHTS_DIR: &str = "weights";

#[derive(Debug, Clone, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum LoadError {
    #[error("cannot read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{path} is invalid: {message}")]
    Manifest { path: String, message: String },
    #[error(
        "no .wasm file in {dir}; put the plugin's component there or name it with `wasm = \"...\"` in plugin.toml"
    )]
    NoWasm { dir: String },
    #[error(
        "several .wasm files in {dir} ({found}); name the plugin's with `wasm = \"...\"` in plugin.toml"
    )]
    AmbiguousWasm { dir: String, found: String },
    #[error(
        "{path} is at least {size} bytes, more than the {max} byte limit; plugin.toml and the .wasm must be files of at most that size"
    )]
    TooLarge { path: String, size: u64, max: u64 },
    #[error(
        "{path} is {found}, not a regular file; plugin.toml and the .wasm must be plain files (replace it with the file itself)"
    )]
    NotAFile { path: String, found: FileKind },
    #[error(
        "loading took longer than {budget} and was abandoned (a file that never finishes reading, or a component too slow to compile); it is retried when the plugin's files change"
    )]
    TimedOut { budget: String },
    #[error("loading the plugin crashed the loader: {message}")]
    Crashed { message: String },
    #[error(
        "{path} is a core WebAssembly module, not a component; build the plugin with `--target wasm32-wasip2`"
    )]
    CoreModule { path: String },
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Invalid { path: String, message: String },
    #[error("{reason}")]
    ForbiddenImport { import: String, reason: String },
    #[error(
        "the plugin does not export `{CONTRACT_PACKAGE}/{HANDLER_INTERFACE}`; build it with the apiary-plugin-api crate"
    )]
    MissingHandler,
    #[error(
        "the plugin was built against contract {found}; this host speaks {CONTRACT_PACKAGE}@{CONTRACT_MAJOR}.x. Rebuild it with apiary-plugin-api {CONTRACT_MAJOR}.x"
    )]
    ContractVersion { found: String },
    #[error("{path} {problem}; `weights` must be a plain folder inside the plugin folder")]
    WeightsOutside { path: String, problem: String },
    #[error("cannot prepare the plugin for instantiation: {message}")]
    Link { message: String },
    #[error("the plugin failed to describe itself: {0}")]
    Describe(CallError),
}

/// Where a plugin comes from: a folder with `plugin.toml`, or a bare `.wasm` file.
#[derive(Debug, Clone, Serialize)]
pub struct PluginSource {
    /// Registry key: the folder name, or the file stem of a bare `.wasm`.
    pub id: String,
    pub path: PathBuf,
    pub wasm_path: PathBuf,
    pub manifest: PluginManifest,
    pub has_manifest: bool,
    /// Absolute path of the plugin's own `weights/` folder, if it has one.
    pub weights: Option<PathBuf>,
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError::Io {
        path: shown(path),
        message: excerpt(&e.to_string(), MAX_MESSAGE_CHARS),
    }
}

/// A failed [`safe_read`] of `path` as a load error.
fn read_err(path: &Path, e: ReadError) -> LoadError {
    match e {
        ReadError::Io(e) => io_err(path, e),
        ReadError::NotAFile(found) => LoadError::NotAFile {
            path: shown(path),
            found,
        },
        ReadError::TooLarge { size, max } => LoadError::TooLarge {
            path: shown(path),
            size,
            max,
        },
    }
}

/// A path for a message. Its last parts come from the plugins folder's entries and from
/// `plugin.toml` (`wasm = ...`): control characters are dropped and a long one is cut in
/// the middle, keeping the file name.
pub(crate) fn shown(path: &Path) -> String {
    let s: Vec<char> = path
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.len() <= 240 {
        return s.into_iter().collect();
    }
    let head: String = s[..100].iter().collect();
    let tail: String = s[s.len() - 120..].iter().collect();
    format!("{head}…{tail}")
}

/// Read a plugin's manifest and wasm bytes from `path` (a folder or a `.wasm` file).
pub fn read_source(path: &Path) -> Result<(PluginSource, Vec<u8>), LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if !meta.is_dir() {
        // A bare `.wasm`: by plain path (the operator's symlink is followed), but only a
        // regular file, read without blocking and at most MAX_WASM_BYTES.
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = safe_read::read_path(path, MAX_WASM_BYTES).map_err(|e| read_err(path, e))?;
        let source = PluginSource {
            id,
            path: path.to_path_buf(),
            wasm_path: path.to_path_buf(),
            manifest: PluginManifest::default(),
            has_manifest: false,
            weights: None,
        };
        return Ok((source, bytes));
    }
    let dir = Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| io_err(path, e))?;
    let manifest_path = path.join(MANIFEST_FILE);
    let (manifest, has_manifest) = match safe_read::read_in(&dir, MANIFEST_FILE, MAX_MANIFEST_BYTES)
    {
        Ok(bytes) => {
            let manifest_err = |message: String| LoadError::Manifest {
                path: shown(&manifest_path),
                message,
            };
            let src = String::from_utf8(bytes)
                .map_err(|e| manifest_err(format!("is not UTF-8 text ({e})")))?;
            (PluginManifest::parse(&src).map_err(manifest_err)?, true)
        }
        Err(e) if e.is_not_found() => (PluginManifest::default(), false),
        Err(e) => return Err(read_err(&manifest_path, e)),
    };
    let wasm_name = match &manifest.wasm {
        Some(w) => w.clone(),
        None => {
            let mut found: Vec<String> = dir
                .entries()
                .map_err(|e| io_err(path, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".wasm") && !n.starts_with('.'))
                .collect();
            found.sort();
            match found.len() {
                0 => {
                    return Err(LoadError::NoWasm { dir: shown(path) });
                }
                1 => found.remove(0),
                n => {
                    const LISTED: usize = 5;
                    let mut names: Vec<String> =
                        found.iter().take(LISTED).map(|n| excerpt(n, 64)).collect();
                    if n > LISTED {
                        names.push(format!("and {} more", n - LISTED));
                    }
                    return Err(LoadError::AmbiguousWasm {
                        dir: shown(path),
                        found: names.join(", "),
                    });
                }
            }
        }
    };
    let wasm_path = path.join(&wasm_name);
    // cap-std refuses to follow a symlink that leads outside `dir`.
    let bytes = safe_read::read_in(&dir, &wasm_name, MAX_WASM_BYTES)
        .map_err(|e| read_err(&wasm_path, e))?;
    let weights = check_weights(&dir, path)?;
    let id = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        PluginSource {
            id,
            path: path.to_path_buf(),
            wasm_path,
            manifest,
            has_manifest,
            weights,
        },
        bytes,
    ))
}

/// `weights/` must be a real folder inside the plugin folder: not a symlink (which would
/// let a plugin folder mount any host path at `/weights`), not anything else.
fn check_weights(dir: &Dir, path: &Path) -> Result<Option<PathBuf>, LoadError> {
    let weights_path = path.join(WEIGHTS_DIR);
    let outside = |problem: &str| LoadError::WeightsOutside {
        path: shown(&weights_path),
        problem: problem.to_string(),
    };
    match dir.symlink_metadata(WEIGHTS_DIR) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(&weights_path, e)),
        Ok(m) if m.file_type().is_symlink() => Err(outside("is a symbolic link")),
        Ok(m) if !m.is_dir() => Err(outside("is not a folder")),
        Ok(_) => {
            let canonical = weights_path
                .canonicalize()
                .map_err(|e| io_err(&weights_path, e))?;
            let folder = path.canonicalize().map_err(|e| io_err(path, e))?;
            if !canonical.starts_with(&folder) {
                return Err(outside("resolves outside the plugin folder"));
            }
            Ok(Some(canonical))
        }
    }
}

/// A compiled component and what it links against.
pub struct Compiled {
    pub component: Component,
    pub sha256: String,
    pub size: u64,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub cache: Option<CacheOutcome>,
}

pub fn compile(
    sandbox: &Sandbox,
    cache: Option<&CompileCache>,
    wasm_path: &Path,
    bytes: &[u8],
) -> Result<Compiled, LoadError> {
    let path = shown(wasm_path);
    if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule { path });
    }
    let sha256 = hex::encode(Sha256::digest(bytes));
    let invalid = |e: wasmtime::Error| LoadError::Invalid {
        path: path.clone(),
        message: excerpt(&format!("{e:#}"), MAX_MESSAGE_CHARS),
    };
    let (component, outcome) = match cache {
        Some(c) => {
            let (comp, o) = c
                .get_or_compile(sandbox.engine(), bytes, &sha256)
                .map_err(invalid)?;
            (comp, Some(o))
        }
        None => (
            Component::new(sandbox.engine(), bytes).map_err(invalid)?,
            None,
        ),
    };
    let ty = component.component_type();
    let engine = sandbox.engine();
    let imports = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
    let exports = ty.exports(engine).map(|(n, _)| n.to_string()).collect();
    Ok(Compiled {
        component,
        sha256,
        size: bytes.len() as u64,
        imports,
        exports,
        cache: outcome,
    })
}

/// Check imports against the allowlist and find the contract version of the handler export.
pub fn check_contract(sandbox: &Sandbox, compiled: &Compiled) -> Result<String, LoadError> {
    for import in &compiled.imports {
        if let Some(reason) = sandbox.config().imports.check(import) {
            // Import names come from the component: quote them short.
            return Err(LoadError::ForbiddenImport {
                import: excerpt(import, 200),
                reason: excerpt(&reason, MAX_MESSAGE_CHARS),
            });
        }
    }
    let handler = compiled
        .exports
        .iter()
        .filter_map(|e| InterfaceName::parse(e))
        .find(|n| n.package == CONTRACT_PACKAGE && n.interface == HANDLER_INTERFACE)
        .ok_or(LoadError::MissingHandler)?;
    let version = handler
        .version
        .clone()
        .unwrap_or_else(|| "(unversioned)".into());
    if handler.track() != Some((CONTRACT_MAJOR, 0)) {
        return Err(LoadError::ContractVersion {
            found: excerpt(&version, 64),
        });
    }
    Ok(version)
}

/// A plugin's fault record. Consecutive faults past the threshold quarantine it until it
/// is reloaded (its folder changes) — a fresh `Plugin` starts healthy.
#[derive(Debug, Default)]
pub struct Health {
    consecutive: AtomicU32,
    total: AtomicU64,
    quarantined: AtomicBool,
}

/// A loaded, ready plugin. Cheap to share (`Arc`); each round makes its own instance.
pub struct Plugin {
    pub source: PluginSource,
    pub name: String,
    pub version: String,
    pub description: String,
    pub domains: Vec<String>,
    pub contract: String,
    pub wasm_sha256: String,
    pub wasm_size: u64,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub limits: Limits,
    pub clamped: Vec<Clamped>,
    pub cache: Option<CacheOutcome>,
    pre: crate::sandbox::Pre,
    health: Health,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.source.id)
            .field("name", &self.name)
            .finish()
    }
}

impl Plugin {
    pub fn id(&self) -> &str {
        &self.source.id
    }

    /// A fresh instance for one round.
    pub fn session(&self, sandbox: &Sandbox, seed: u64) -> Result<Session, CallError> {
        Session::new(
            sandbox,
            InstanceSpec {
                name: &self.name,
                pre: &self.pre,
                limits: self.limits,
                weights: self.source.weights.as_deref(),
                seed,
            },
        )
    }

    /// Count a round's outcome for this plugin: a round with any fault extends its run of
    /// faulty rounds, a clean one ends it. Returns true if this round quarantined it.
    pub fn record_round(&self, faulted: bool, quarantine_after: u32) -> bool {
        if !faulted {
            self.health.consecutive.store(0, Ordering::Relaxed);
            return false;
        }
        self.health.total.fetch_add(1, Ordering::Relaxed);
        let n = self.health.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= quarantine_after && !self.health.quarantined.swap(true, Ordering::Relaxed) {
            tracing::warn!(plugin = %self.name, "quarantined after {n} consecutive faulty rounds; it is offered no rounds until reloaded");
            return true;
        }
        false
    }

    pub fn is_quarantined(&self) -> bool {
        self.health.quarantined.load(Ordering::Relaxed)
    }

    /// Rounds in which this plugin faulted, since it was loaded.
    pub fn total_faults(&self) -> u64 {
        self.health.total.load(Ordering::Relaxed)
    }
}

/// Load the plugin at `path` (a folder or a bare `.wasm`).
pub fn load(
    sandbox: &Sandbox,
    cache: Option<&CompileCache>,
    path: &Path,
) -> Result<Plugin, LoadError> {
    let (source, bytes) = read_source(path)?;
    let compiled = compile(sandbox, cache, &source.wasm_path, &bytes)?;
    let contract = check_contract(sandbox, &compiled)?;
    let pre = sandbox
        .pre(&compiled.component)
        .map_err(|e| LoadError::Link {
            message: excerpt(&format!("{e:#}"), MAX_MESSAGE_CHARS),
        })?;
    let (limits, clamped) = sandbox.config().limits.grant(&source.manifest.limits);
    for c in &clamped {
        tracing::warn!(
            plugin = %source.id,
            "asked for {} = {}, granted {} (the operator's ceiling)",
            c.field, c.requested, c.granted
        );
    }
    let mut plugin = Plugin {
        name: source.id.clone(),
        version: String::new(),
        description: String::new(),
        domains: Vec::new(),
        contract,
        wasm_sha256: compiled.sha256,
        wasm_size: compiled.size,
        imports: compiled.imports,
        exports: compiled.exports,
        limits,
        clamped,
        cache: compiled.cache,
        pre,
        health: Health::default(),
        source,
    };
    let described = plugin
        .session(sandbox, 0)
        .and_then(|mut s| s.describe())
        .map_err(|e| LoadError::Describe(short_call_error(e)))?;
    let m = &plugin.source.manifest;
    plugin.name = m
        .name
        .clone()
        .unwrap_or_else(|| printable(&described.name, 64));
    // What plugin.toml says is held to the same caps as what the plugin says.
    plugin.version = printable(m.version.as_deref().unwrap_or(&described.version), 32);
    plugin.description = printable(
        m.description.as_deref().unwrap_or(&described.description),
        512,
    );
    plugin.domains = m
        .domains
        .as_ref()
        .unwrap_or(&described.domains)
        .iter()
        .take(32)
        .map(|d| printable(d, 64))
        .collect();
    if plugin.name.is_empty() {
        plugin.name = plugin.source.id.clone();
    }
    Ok(plugin)
}

/// A plugin's error while describing itself, with its messages (a panic's text, a trap's
/// backtrace) cut short.
fn short_call_error(e: CallError) -> CallError {
    let short = |m: String| excerpt(&m, MAX_MESSAGE_CHARS);
    match e {
        CallError::Panic { call, message } => CallError::Panic {
            call,
            message: short(message),
        },
        CallError::Trap { call, message } => CallError::Trap {
            call,
            message: short(message),
        },
        CallError::Instantiate { message } => CallError::Instantiate {
            message: short(message),
        },
        CallError::Declined(m) => CallError::Declined(short(m)),
        CallError::OutputFlood {
            call,
            stream,
            limit_kib,
        } => CallError::OutputFlood {
            call,
            stream: excerpt(&stream, 32),
            limit_kib,
        },
        other => other,
    }
}

/// What a plugin says about itself is untrusted text shown in terminals and logs: cap its
/// length and drop control characters (no escape sequences).
fn printable(s: &str, max_chars: usize) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect::<String>()
        .trim()
        .to_string()
}
