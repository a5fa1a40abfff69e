//! The precompiled-code cache.
//!
//! Compiling a component with Cranelift takes tens to hundreds of milliseconds; loading a
//! precompiled artifact takes about one. But deserializing an artifact is `unsafe`: its
//! bytes become executable code. So the cache only ever loads bytes this host wrote:
//! - it lives in a host-only folder (created `0700`; refused if others can write to it),
//!   never in the plugins folder;
//! - entries are keyed by the engine's compatibility hash and the wasm's sha256, so a
//!   different wasmtime, different settings or different wasm never match;
//! - every entry carries an HMAC-SHA256 tag under a per-cache secret key (`0600`), checked
//!   before deserializing; a file planted or altered by anyone without the key is ignored
//!   and recompiled.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;
const TAG_LEN: usize = 32;
const KEY_FILE: &str = "cache.key";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cache folder {0} is writable by other users; refusing to load compiled code from it (chmod 700 it)"
    )]
    Insecure(PathBuf),
}

pub struct CompileCache {
    dir: PathBuf,
    key: [u8; 32],
    engine_hash: String,
}

/// What happened when a component was obtained through the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// An entry existed but its tag did not verify; it was replaced.
    Rejected,
}

impl CompileCache {
    /// The default location: `$XDG_CACHE_HOME/apiary/compiled` or `~/.cache/apiary/compiled`.
    pub fn default_dir() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|d| d.join("apiary").join("compiled"))
    }

    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        check_private(dir)?;
        let key_path = dir.join(KEY_FILE);
        let key = match fs::read(&key_path) {
            Ok(k) if k.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&k);
                key
            }
            _ => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| io(std::io::Error::other(e.to_string())))?;
                write_private(&key_path, &key).map_err(io)?;
                key
            }
        };
        Ok(CompileCache {
            dir: dir.to_path_buf(),
            key,
            engine_hash: engine_hash(engine),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry_path(&self, wasm_sha256: &str) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.engine_hash.as_bytes());
        h.update(wasm_sha256.as_bytes());
        self.dir
            .join(format!("{}.cwasm", hex::encode(h.finalize())))
    }

    fn tag(&self, bytes: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(self.engine_hash.as_bytes());
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// The compiled component for `wasm`, from the cache when a verified entry exists.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        wasm: &[u8],
        wasm_sha256: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(wasm_sha256);
        let mut outcome = CacheOutcome::Miss;
        if let Ok(file) = fs::read(&path) {
            if file.len() > TAG_LEN {
                let (tag, artifact) = file.split_at(TAG_LEN);
                let expected = self.tag(artifact);
                if constant_time_eq(tag, &expected) {
                    // SAFETY: the bytes were written by this host (the HMAC under our private
                    // key verifies) for this engine configuration (the key and tag cover its
                    // compatibility hash), and are held in memory, so they cannot change
                    // between the check and the load.
                    match unsafe { Component::deserialize(engine, artifact) } {
                        Ok(c) => return Ok((c, CacheOutcome::Hit)),
                        Err(e) => tracing::warn!(
                            "discarding unusable cache entry {}: {e:#}",
                            path.display()
                        ),
                    }
                }
            }
            outcome = CacheOutcome::Rejected;
            tracing::warn!(
                "cache entry {} failed verification; recompiling",
                path.display()
            );
        }
        let artifact = engine.precompile_component(wasm)?;
        // SAFETY: produced just now by this engine from the given wasm.
        let component = unsafe { Component::deserialize(engine, &artifact)? };
        let mut file = Vec::with_capacity(TAG_LEN + artifact.len());
        file.extend_from_slice(&self.tag(&artifact));
        file.extend_from_slice(&artifact);
        if let Err(e) = write_private(&path, &file) {
            tracing::warn!("cannot write cache entry {}: {e}", path.display());
        }
        Ok((component, outcome))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Feeds the engine's `Hash` output into sha256, giving a stable hex id per engine config.
fn engine_hash(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(h.0.finalize())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir)
    }
}

fn check_private(dir: &Path) -> Result<(), CacheError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(dir).map_err(|source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(CacheError::Insecure(dir.to_path_buf()));
        }
    }
    Ok(())
}

/// Write via a temporary file and rename, so a reader never sees half an entry.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAT: &str = r#"(component (core module (func (export "f"))))"#;

    fn engine() -> Engine {
        let mut c = wasmtime::Config::new();
        c.wasm_component_model(true);
        Engine::new(&c).unwrap()
    }

    #[test]
    fn hit_after_miss_and_tamper_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine();
        let cache = CompileCache::open(&dir.path().join("c"), &engine).unwrap();
        let wasm = wat_component();
        let sha = hex::encode(Sha256::digest(&wasm));
        let (_, o) = cache.get_or_compile(&engine, &wasm, &sha).unwrap();
        assert_eq!(o, CacheOutcome::Miss);
        let (_, o) = cache.get_or_compile(&engine, &wasm, &sha).unwrap();
        assert_eq!(o, CacheOutcome::Hit);
        // Flip one byte of the artifact: the tag no longer verifies.
        let path = cache.entry_path(&sha);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let (_, o) = cache.get_or_compile(&engine, &wasm, &sha).unwrap();
        assert_eq!(o, CacheOutcome::Rejected);
        let (_, o) = cache.get_or_compile(&engine, &wasm, &sha).unwrap();
        assert_eq!(o, CacheOutcome::Hit, "rejected entry was rewritten");
    }

    #[cfg(unix)]
    #[test]
    fn world_writable_cache_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("c");
        fs::create_dir(&c).unwrap();
        fs::set_permissions(&c, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(
            CompileCache::open(&c, &engine()),
            Err(CacheError::Insecure(_))
        ));
    }

    fn wat_component() -> Vec<u8> {
        // A tiny component in binary form, built from WAT by wasmtime's own parser is not
        // available without the `wat` feature, so encode the minimal component by hand.
        let _ = WAT;
        vec![
            0x00, 0x61, 0x73, 0x6d, // magic
            0x0d, 0x00, 0x01, 0x00, // component, layer 1
        ]
    }
}
