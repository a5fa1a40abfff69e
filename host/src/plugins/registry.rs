//! The plugins folder as a live set: scan, load, and reload on change.
//!
//! Each entry of the folder is a plugin: a subfolder (with `plugin.toml` and/or a `.wasm`)
//! or a bare `.wasm` file. Entries starting with `.` are ignored (editors' temporary files).
//! A rescan compares cheap fingerprints (size and mtime of the manifest and the `.wasm`
//! files) and reloads only what changed; rounds in flight keep the `Arc<Plugin>` they
//! started with, so replacing a plugin never disturbs them.

use super::cache::CompileCache;
use super::loader::{self, LoadError, Plugin};
use super::manifest::MANIFEST_FILE;
use crate::sandbox::Sandbox;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// Consecutive faults after which a plugin is quarantined.
pub const DEFAULT_QUARANTINE_AFTER: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<(String, u64, Option<SystemTime>)>);

fn fingerprint(path: &Path) -> Fingerprint {
    let stat = |p: &Path| {
        std::fs::symlink_metadata(p)
            .ok()
            .map(|m| (m.len(), m.modified().ok(), m.file_type().is_symlink()))
    };
    let mut parts = Vec::new();
    if path.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(path)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| {
                        n == MANIFEST_FILE || n.ends_with(".wasm") || n == loader::WEIGHTS_DIR
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        for n in names {
            if let Some((len, mtime, link)) = stat(&path.join(&n)) {
                parts.push((format!("{n}{}", if link { "@" } else { "" }), len, mtime));
            }
        }
    } else if let Some((len, mtime, _)) = stat(path) {
        parts.push((String::new(), len, mtime));
    }
    Fingerprint(parts)
}

enum Slot {
    Loaded {
        plugin: Arc<Plugin>,
        print: Fingerprint,
    },
    Refused {
        path: PathBuf,
        error: LoadError,
        print: Fingerprint,
    },
}

/// One plugin folder entry as seen by the operator.
#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub id: String,
    pub path: PathBuf,
    #[serde(flatten)]
    pub status: Status,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Status {
    Loaded {
        name: String,
        version: String,
        domains: Vec<String>,
        sha256: String,
        quarantined: bool,
    },
    Refused {
        reason: String,
    },
}

/// What a rescan changed.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct ScanReport {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    pub refused: Vec<(String, String)>,
}

impl ScanReport {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.replaced.is_empty()
            && self.removed.is_empty()
            && self.refused.is_empty()
    }
}

pub struct Registry {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    cache: Option<CompileCache>,
    slots: RwLock<BTreeMap<String, Slot>>,
    pub quarantine_after: u32,
}

impl Registry {
    pub fn new(dir: &Path, sandbox: Arc<Sandbox>, cache: Option<CompileCache>) -> Self {
        Registry {
            dir: dir.to_path_buf(),
            sandbox,
            cache,
            slots: RwLock::new(BTreeMap::new()),
            quarantine_after: DEFAULT_QUARANTINE_AFTER,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// The folder's entries that look like plugins, by id.
    fn entries(&self) -> std::io::Result<BTreeMap<String, PathBuf>> {
        let mut out = BTreeMap::new();
        for e in std::fs::read_dir(&self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = e.path();
            if path.is_dir() {
                out.insert(name, path);
            } else if let Some(stem) = name.strip_suffix(".wasm") {
                out.insert(stem.to_string(), path);
            }
        }
        Ok(out)
    }

    /// Bring the registry in line with the folder. Loading happens outside the lock, so
    /// rounds keep running while a slow plugin compiles.
    pub fn rescan(&self) -> std::io::Result<ScanReport> {
        let entries = self.entries()?;
        let mut report = ScanReport::default();
        let mut work = Vec::new();
        {
            let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
            for (id, path) in &entries {
                let print = fingerprint(path);
                let unchanged = match slots.get(id) {
                    Some(Slot::Loaded { print: p, .. }) | Some(Slot::Refused { print: p, .. }) => {
                        *p == print
                    }
                    None => false,
                };
                if !unchanged {
                    work.push((id.clone(), path.clone(), print, slots.contains_key(id)));
                }
            }
            for id in slots.keys() {
                if !entries.contains_key(id) {
                    report.removed.push(id.clone());
                }
            }
        }
        let loaded: Vec<_> = work
            .into_iter()
            .map(|(id, path, print, existed)| {
                let result = loader::load(&self.sandbox, self.cache.as_ref(), &path);
                (id, path, print, existed, result)
            })
            .collect();
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        for id in &report.removed {
            slots.remove(id);
            tracing::info!(plugin = %id, "removed");
        }
        for (id, path, print, existed, result) in loaded {
            match result {
                Ok(plugin) => {
                    tracing::info!(plugin = %id, name = %plugin.name, sha256 = %&plugin.wasm_sha256[..12], "{}", if existed { "reloaded" } else { "loaded" });
                    if existed {
                        &mut report.replaced
                    } else {
                        &mut report.added
                    }
                    .push(id.clone());
                    slots.insert(
                        id,
                        Slot::Loaded {
                            plugin: Arc::new(plugin),
                            print,
                        },
                    );
                }
                Err(error) => {
                    tracing::warn!(plugin = %id, "refused: {error}");
                    report.refused.push((id.clone(), error.to_string()));
                    slots.insert(id, Slot::Refused { path, error, print });
                }
            }
        }
        Ok(report)
    }

    /// Plugins that may take part in rounds (loaded and not quarantined).
    pub fn active(&self) -> Vec<Arc<Plugin>> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .values()
            .filter_map(|s| match s {
                Slot::Loaded { plugin, .. } if !plugin.is_quarantined() => Some(plugin.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        match self.slots.read().unwrap_or_else(|p| p.into_inner()).get(id) {
            Some(Slot::Loaded { plugin, .. }) => Some(plugin.clone()),
            _ => None,
        }
    }

    /// Every entry, loaded or refused, for `apiary plugins list`.
    pub fn listing(&self) -> Vec<Listing> {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        slots
            .iter()
            .map(|(id, s)| match s {
                Slot::Loaded { plugin, .. } => Listing {
                    id: id.clone(),
                    path: plugin.source.path.clone(),
                    status: Status::Loaded {
                        name: plugin.name.clone(),
                        version: plugin.version.clone(),
                        domains: plugin.domains.clone(),
                        sha256: plugin.wasm_sha256.clone(),
                        quarantined: plugin.is_quarantined(),
                    },
                },
                Slot::Refused { path, error, .. } => Listing {
                    id: id.clone(),
                    path: path.clone(),
                    status: Status::Refused {
                        reason: error.to_string(),
                    },
                },
            })
            .collect()
    }

    /// Watch the folder and rescan on change until the returned handle is dropped.
    /// Filesystem events (inotify and friends, through `notify`) trigger a rescan after a
    /// short quiet period, so a plugin copied in several writes loads once, complete; a
    /// slow poll backs the events up on filesystems that do not deliver them.
    pub fn watch(
        self: &Arc<Self>,
        on_change: impl Fn(&ScanReport) + Send + 'static,
    ) -> notify::Result<WatchHandle> {
        use notify::{RecursiveMode, Watcher};
        let (tx, rx) = channel::<()>();
        let event_tx = tx.clone();
        let mut watcher =
            notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
                if res.is_ok() {
                    let _ = event_tx.send(());
                }
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        let registry = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("apiary-watch".into())
            .spawn(move || {
                const QUIET: Duration = Duration::from_millis(150);
                const POLL: Duration = Duration::from_secs(2);
                loop {
                    match rx.recv_timeout(POLL) {
                        Ok(()) => {
                            // Debounce: wait until events stop arriving.
                            loop {
                                match rx.recv_timeout(QUIET) {
                                    Ok(()) => continue,
                                    Err(RecvTimeoutError::Timeout) => break,
                                    Err(RecvTimeoutError::Disconnected) => return,
                                }
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    match registry.rescan() {
                        Ok(report) if !report.is_empty() => on_change(&report),
                        Ok(_) => {}
                        Err(e) => tracing::warn!("cannot rescan {}: {e}", registry.dir.display()),
                    }
                }
            })?;
        Ok(WatchHandle {
            watcher: Some(watcher),
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

/// Keeps a folder watch alive; dropping it stops the watch.
pub struct WatchHandle {
    watcher: Option<notify::RecommendedWatcher>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        // The watcher's callback holds one sender and we hold the other; once both are
        // gone the thread's channel disconnects and it exits.
        self.watcher.take();
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
