//! The plugins folder as a live set: scan, load, and reload on change.
//!
//! Each entry of the folder is a plugin: a subfolder (with `plugin.toml` and/or a `.wasm`)
//! or a bare `.wasm` file. Entries starting with `.` are ignored (editors' temporary files).
//! A rescan compares cheap fingerprints (size and mtime of the manifest and the `.wasm`
//! files) and reloads only what changed; rounds in flight keep the `Arc<Plugin>` they
//! started with, so replacing a plugin never disturbs them.
//!
//! Each plugin loads on its own thread (a few at a time) within a time budget
//! ([`DEFAULT_LOAD_BUDGET`]), and each result takes effect as soon as it is in: a folder
//! that hangs or is slow, whatever the reason, delays nobody else and is refused when its
//! budget runs out. Its thread is left to finish in the background; what it produces then
//! is discarded. Every rescan is numbered, and a result is applied only if no newer rescan
//! has taken charge of that plugin since, so a late load never replaces a newer one.

use super::cache::CompileCache;
use super::loader::{self, LoadError, Plugin};
use super::manifest::MANIFEST_FILE;
use crate::sandbox::Sandbox;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Consecutive faults after which a plugin is quarantined.
pub const DEFAULT_QUARANTINE_AFTER: u32 = 3;
/// How long loading one plugin (read, compile, pre-instantiate, describe) may take before
/// it is refused and the rest go on without it.
pub const DEFAULT_LOAD_BUDGET: Duration = Duration::from_secs(60);
/// Plugins loading at the same time (wasmtime compiles each in parallel already). One
/// that runs out of its budget frees its place; its thread is not counted any more.
const LOADS_AT_ONCE: usize = 4;

/// Loads one plugin folder entry; `loader::load` with the registry's sandbox and cache.
type LoadFn = dyn Fn(&Path) -> Result<Plugin, LoadError> + Send + Sync;

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

/// One entry of the folder to (re)load.
struct Work {
    id: String,
    path: PathBuf,
    print: Fingerprint,
    existed: bool,
}

pub struct Registry {
    dir: PathBuf,
    sandbox: Arc<Sandbox>,
    load: Arc<LoadFn>,
    slots: RwLock<BTreeMap<String, Slot>>,
    /// For each id, the newest rescan that took charge of it (to load or remove it). Lock
    /// order: `slots`, then `claims`.
    claims: Mutex<HashMap<String, u64>>,
    /// The number of the last rescan started.
    generation: AtomicU64,
    /// The per-plugin load budget, in milliseconds.
    load_budget_ms: AtomicU64,
    pub quarantine_after: u32,
}

impl Registry {
    pub fn new(dir: &Path, sandbox: Arc<Sandbox>, cache: Option<CompileCache>) -> Self {
        let cache = cache.map(Arc::new);
        let loader_sandbox = Arc::clone(&sandbox);
        Self::with_loader(dir, sandbox, move |path| {
            loader::load(&loader_sandbox, cache.as_deref(), path)
        })
    }

    /// A registry whose entries are loaded by `load` (tests stand in slow or hanging
    /// loaders with it).
    fn with_loader(
        dir: &Path,
        sandbox: Arc<Sandbox>,
        load: impl Fn(&Path) -> Result<Plugin, LoadError> + Send + Sync + 'static,
    ) -> Self {
        Registry {
            dir: dir.to_path_buf(),
            sandbox,
            load: Arc::new(load),
            slots: RwLock::new(BTreeMap::new()),
            claims: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            load_budget_ms: AtomicU64::new(DEFAULT_LOAD_BUDGET.as_millis() as u64),
            quarantine_after: DEFAULT_QUARANTINE_AFTER,
        }
    }

    /// How long one plugin may take to load before it is refused.
    pub fn load_budget(&self) -> Duration {
        Duration::from_millis(self.load_budget_ms.load(Ordering::Relaxed))
    }

    /// Change the per-plugin load budget for later rescans (at least 1 ms).
    pub fn set_load_budget(&self, budget: Duration) {
        let ms = u64::try_from(budget.as_millis()).unwrap_or(u64::MAX).max(1);
        self.load_budget_ms.store(ms, Ordering::Relaxed);
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

    /// Bring the registry in line with the folder. Loading happens outside the lock, each
    /// plugin on its own thread within [`Registry::load_budget`], so rounds keep running
    /// while a slow plugin compiles, and one that hangs is refused when its time is up.
    /// Each result is in the registry as soon as that plugin is done.
    pub fn rescan(&self) -> std::io::Result<ScanReport> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let entries = self.entries()?;
        let mut report = ScanReport::default();
        let mut work = Vec::new();
        let mut removed = Vec::new();
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
                    work.push(Work {
                        id: id.clone(),
                        path: path.clone(),
                        print,
                        existed: slots.contains_key(id),
                    });
                }
            }
            for id in slots.keys() {
                if !entries.contains_key(id) {
                    removed.push(id.clone());
                }
            }
        }
        {
            // Take charge of what this rescan changes, unless a newer one already has.
            let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
            let mut claim = |id: &str| match claims.get(id) {
                Some(&newer) if newer > generation => false,
                _ => {
                    claims.insert(id.to_string(), generation);
                    true
                }
            };
            work.retain(|w| claim(&w.id));
            removed.retain(|id| claim(id));
        }
        if !removed.is_empty() {
            let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
            let claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
            for id in removed {
                if claims.get(&id) == Some(&generation) && slots.remove(&id).is_some() {
                    tracing::info!(plugin = %id, "removed");
                    report.removed.push(id);
                }
            }
        }
        self.load_all(generation, work, &mut report);
        // Loads finish in any order; report them in the folder's.
        report.added.sort();
        report.replaced.sort();
        report.refused.sort();
        Ok(report)
    }

    /// Load `work`, [`LOADS_AT_ONCE`] at a time, each within the load budget, and apply
    /// each result as it comes.
    fn load_all(&self, generation: u64, work: Vec<Work>, report: &mut ScanReport) {
        let budget = self.load_budget();
        // Results of this rescan only: a thread it gave up on may still send one later,
        // into a channel nobody reads any more (or that no longer expects it).
        let (tx, rx) = channel::<Loaded>();
        let mut queue = work.into_iter().enumerate();
        let mut running: BTreeMap<usize, (Instant, Work)> = BTreeMap::new();
        loop {
            while running.len() < LOADS_AT_ONCE {
                let Some((i, w)) = queue.next() else { break };
                match spawn_load(&self.load, &w.path, i, tx.clone()) {
                    Ok(_) => {
                        let now = Instant::now();
                        // A budget too large to add is no deadline in practice: a year.
                        let deadline = now
                            .checked_add(budget)
                            .unwrap_or(now + Duration::from_secs(365 * 86_400));
                        running.insert(i, (deadline, w));
                    }
                    Err(e) => {
                        let error = LoadError::Io {
                            path: loader::shown(&w.path),
                            message: format!("cannot start a thread to load it: {e}"),
                        };
                        self.settle(generation, w, Err(error), report);
                    }
                }
            }
            let Some(next_deadline) = running.values().map(|(d, _)| *d).min() else {
                break;
            };
            match rx.recv_timeout(next_deadline.saturating_duration_since(Instant::now())) {
                Ok((i, result)) => {
                    // Not running any more: it ran out of time, and was reported so.
                    if let Some((_, w)) = running.remove(&i) {
                        self.settle(generation, w, result, report);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let late: Vec<usize> = running
                        .iter()
                        .filter(|(_, (deadline, _))| *deadline <= now)
                        .map(|(i, _)| *i)
                        .collect();
                    for i in late {
                        let (_, w) = running.remove(&i).expect("listed as running");
                        let error = LoadError::TimedOut {
                            budget: human(budget),
                        };
                        self.settle(generation, w, Err(error), report);
                    }
                }
                // `tx` is held here, so the channel cannot disconnect.
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    /// Load the plugin at `path` exactly as a rescan loads an entry (its own thread, a
    /// panic a refusal, refused when the load budget runs out) without adding it to the
    /// registry: `apiary plugins check` tries a plugin as a node would load it.
    pub fn load_one(&self, path: &Path) -> Result<Plugin, LoadError> {
        let (tx, rx) = channel();
        spawn_load(&self.load, path, 0, tx).map_err(|e| LoadError::Io {
            path: loader::shown(path),
            message: format!("cannot start a thread to load it: {e}"),
        })?;
        let budget = self.load_budget();
        match rx.recv_timeout(budget) {
            Ok((_, result)) => result,
            Err(_) => Err(LoadError::TimedOut {
                budget: human(budget),
            }),
        }
    }

    /// Put one load's result in the registry, unless a newer rescan has taken charge of
    /// that plugin since this one did.
    fn settle(
        &self,
        generation: u64,
        w: Work,
        result: Result<Plugin, LoadError>,
        report: &mut ScanReport,
    ) {
        let Work {
            id,
            path,
            print,
            existed,
        } = w;
        let mut slots = self.slots.write().unwrap_or_else(|p| p.into_inner());
        let claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        if claims.get(&id) != Some(&generation) {
            tracing::debug!(plugin = %id, "a newer rescan has this plugin; this load is discarded");
            return;
        }
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

/// A load's result, tagged with its place in the queue.
type Loaded = (usize, Result<Plugin, LoadError>);

/// Load `path` on a thread of its own and send the result, tagged `i`, to `tx`. A panic
/// in the loader is a refusal. Whoever waits decides how long: the thread is never
/// joined, so a load that hangs costs a thread, not the caller.
fn spawn_load(
    load: &Arc<LoadFn>,
    path: &Path,
    i: usize,
    tx: std::sync::mpsc::Sender<Loaded>,
) -> std::io::Result<()> {
    let load = Arc::clone(load);
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("apiary-load".into())
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| load(&path))).unwrap_or_else(
                |panic| {
                    let message = crate::sandbox::panic_message(&*panic);
                    Err(LoadError::Crashed {
                        message: super::safe_read::excerpt(&message, 300),
                    })
                },
            );
            let _ = tx.send((i, result));
        })
        .map(|_| ())
}

/// A budget for a message: "60 s", or "250 ms" below a second or when not whole seconds.
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::SandboxConfig;
    use std::sync::atomic::AtomicUsize;

    fn sandbox() -> Arc<Sandbox> {
        Arc::new(Sandbox::new(SandboxConfig::default()).expect("sandbox"))
    }

    /// A plugins folder with one subfolder (holding a `plugin.toml`) per id.
    fn folder(ids: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for id in ids {
            std::fs::create_dir(dir.path().join(id)).unwrap();
            std::fs::write(dir.path().join(id).join(MANIFEST_FILE), "").unwrap();
        }
        dir
    }

    /// A stand-in load result that names what produced it (a real `Plugin` needs a
    /// compiled component; a refusal's reason is enough to see which load won).
    fn stub(what: &str) -> Result<Plugin, LoadError> {
        Err(LoadError::Io {
            path: "stub".into(),
            message: what.into(),
        })
    }

    fn reason(r: &Registry, id: &str) -> String {
        match r
            .listing()
            .into_iter()
            .find(|l| l.id == id)
            .map(|l| l.status)
        {
            Some(Status::Refused { reason }) => reason,
            other => panic!("{id}: {other:?}"),
        }
    }

    fn id_of(path: &Path) -> String {
        path.file_name().unwrap().to_string_lossy().into_owned()
    }

    #[test]
    fn a_hanging_load_is_refused_at_its_budget_and_the_others_load_meanwhile() {
        let dir = folder(&["a", "hang", "z"]);
        let r = Arc::new(Registry::with_loader(dir.path(), sandbox(), |path| {
            if id_of(path) == "hang" {
                // Hangs (far longer than the test); left behind when the test ends.
                std::thread::sleep(Duration::from_secs(3600));
            }
            stub(&format!("done {}", id_of(path)))
        }));
        r.set_load_budget(Duration::from_millis(1500));
        let started = Instant::now();
        let scanning = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || r.rescan().unwrap())
        };
        // The others are in the registry while the hanging one is still pending.
        let mut seen_early = false;
        while !scanning.is_finished() {
            let listed: Vec<String> = r.listing().into_iter().map(|l| l.id).collect();
            if listed == ["a", "z"] {
                seen_early = true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let report = scanning.join().unwrap();
        let took = started.elapsed();
        assert!(
            seen_early,
            "a and z should be settled before the budget ran out"
        );
        assert!(
            took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
            "{took:?}"
        );
        assert_eq!(reason(&r, "a"), "cannot read stub: done a");
        assert_eq!(reason(&r, "z"), "cannot read stub: done z");
        let why = reason(&r, "hang");
        assert!(why.starts_with("loading took longer than 1500 ms"), "{why}");
        assert_eq!(report.refused.len(), 3, "{report:?}");
        // Unchanged, it is not retried (no new thread per rescan for a stuck folder).
        let again = Instant::now();
        assert!(r.rescan().unwrap().is_empty());
        assert!(again.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_late_result_is_discarded_and_never_replaces_a_newer_load() {
        let dir = folder(&["x"]);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let r = Registry::with_loader(dir.path(), sandbox(), move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(800));
                stub("first load")
            } else {
                stub("second load")
            }
        });
        r.set_load_budget(Duration::from_millis(200));
        r.rescan().unwrap();
        assert!(reason(&r, "x").contains("longer than 200 ms"));
        // The folder changes; the next load is fast.
        std::fs::write(dir.path().join("x").join(MANIFEST_FILE), "# v2\n").unwrap();
        let report = r.rescan().unwrap();
        assert_eq!(report.refused.len(), 1, "{report:?}");
        assert_eq!(reason(&r, "x"), "cannot read stub: second load");
        // The first, abandoned load finishes now; its result goes nowhere.
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(reason(&r, "x"), "cannot read stub: second load");
        // Nor does it sneak in through a later rescan.
        assert!(r.rescan().unwrap().is_empty());
        assert_eq!(reason(&r, "x"), "cannot read stub: second load");
    }

    #[test]
    fn an_older_rescan_finishing_last_does_not_overwrite_a_newer_one() {
        let dir = folder(&["x"]);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&calls);
        let r = Arc::new(Registry::with_loader(dir.path(), sandbox(), move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(1000));
                stub("old folder")
            } else {
                stub("new folder")
            }
        }));
        // The old load is within its budget: the first rescan waits for it and would
        // apply it, were it not for the second rescan that took charge in the meantime.
        let older = {
            let r = Arc::clone(&r);
            std::thread::spawn(move || r.rescan().unwrap())
        };
        while calls.load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::write(dir.path().join("x").join(MANIFEST_FILE), "# v2\n").unwrap();
        let newer = r.rescan().unwrap();
        assert_eq!(newer.refused.len(), 1);
        assert_eq!(reason(&r, "x"), "cannot read stub: new folder");
        let older = older.join().unwrap();
        assert!(older.refused.is_empty(), "{older:?}");
        assert_eq!(reason(&r, "x"), "cannot read stub: new folder");
    }

    #[test]
    fn one_plugin_loads_as_a_rescan_would_and_stays_out_of_the_registry() {
        let dir = folder(&["slow", "boom"]);
        let r = Registry::with_loader(dir.path(), sandbox(), |path| {
            if id_of(path) == "boom" {
                panic!("kaboom");
            }
            std::thread::sleep(Duration::from_secs(3600));
            stub("never")
        });
        r.set_load_budget(Duration::from_millis(300));
        let started = Instant::now();
        let why = r
            .load_one(&dir.path().join("slow"))
            .unwrap_err()
            .to_string();
        assert!(why.starts_with("loading took longer than 300 ms"), "{why}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let why = r
            .load_one(&dir.path().join("boom"))
            .unwrap_err()
            .to_string();
        assert!(why.contains("crashed the loader: kaboom"), "{why}");
        assert!(
            r.listing().is_empty(),
            "load_one adds nothing to the registry"
        );
    }

    #[test]
    fn a_loader_that_panics_is_a_refusal() {
        let dir = folder(&["boom"]);
        let r = Registry::with_loader(dir.path(), sandbox(), |_| panic!("kaboom"));
        r.rescan().unwrap();
        let why = reason(&r, "boom");
        assert!(why.contains("crashed the loader: kaboom"), "{why}");
    }

    #[test]
    fn budgets_read_well() {
        assert_eq!(human(DEFAULT_LOAD_BUDGET), "60 s");
        assert_eq!(human(Duration::from_millis(250)), "250 ms");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
    }
}
