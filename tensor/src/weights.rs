//! Weights files (GGUF and safetensors), opened by name from a plugin's own `weights/`
//! folder, memory-mapped, parsed once and shared.
//!
//! Opening goes through a cap-std `Dir` for the plugin's folder, so a name like
//! `../other-plugin/weights/model.gguf`, an absolute path, or a symlink leading out is
//! refused. Parsed files are cached by the host (keyed by canonical path, size and
//! modification time), so a fresh plugin instance per round costs a hash-map look-up, not
//! a re-parse of a 50,000-entry tokenizer.

use crate::gguf::{Gguf, Value};
use crate::{DType, Result, Storage, Tensor, TensorError};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// A read-only memory map of a weights file.
pub struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Map a whole file read-only (tests and benches; plugins go through [`open`]).
    pub fn open(path: &Path) -> std::io::Result<MappedFile> {
        let file = std::fs::File::open(path)?;
        // SAFETY: read-only mapping of a file this process controls.
        Ok(MappedFile {
            map: unsafe { Mmap::map(&file)? },
        })
    }
}

/// One tensor's place in a file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub start: usize,
    pub len: usize,
    /// In [`WeightsFile::widened`] rather than the file's own mapping.
    pub widened: bool,
}

pub enum Format {
    Gguf(Gguf),
    Safetensors { metadata: BTreeMap<String, String> },
}

/// A parsed weights file.
pub struct WeightsFile {
    pub name: String,
    pub file: Arc<MappedFile>,
    pub format: Format,
    pub tensors: BTreeMap<String, Entry>,
    /// Q5_0 tensors of the file, widened to Q8_0 once at open, in one read-only
    /// anonymous mapping shared like the file's.
    pub widened: Option<Arc<MappedFile>>,
}

impl WeightsFile {
    pub fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    /// A tensor backed by the mapping (no copy).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let e = self
            .tensors
            .get(name)
            .ok_or_else(|| TensorError::NotFound(format!("no tensor {name:?} in {}", self.name)))?;
        let file = match (&self.widened, e.widened) {
            (Some(w), true) => w.clone(),
            _ => self.file.clone(),
        };
        Ok(Tensor {
            shape: e.shape.clone(),
            dtype: e.dtype,
            storage: Storage::Mapped {
                file,
                start: e.start,
                len: e.len,
            },
        })
    }

    pub fn metadata(&self, key: &str) -> Option<Value> {
        match &self.format {
            Format::Gguf(g) => g.get(key).cloned(),
            Format::Safetensors { metadata } => metadata.get(key).map(|s| Value::Str(s.clone())),
        }
    }

    /// Parse `bytes` (a mapping of file `name`) as GGUF or safetensors.
    pub fn parse(name: &str, file: Arc<MappedFile>) -> Result<WeightsFile> {
        let bytes = file.bytes();
        let invalid = |m: String| TensorError::InvalidFile(format!("{name}: {m}"));
        if bytes.starts_with(b"GGUF") {
            let g = Gguf::parse(bytes).map_err(|e| invalid(e.0))?;
            let (tensors, widened) = gguf_entries(&g, bytes).map_err(invalid)?;
            return Ok(WeightsFile {
                name: name.into(),
                file: file.clone(),
                format: Format::Gguf(g),
                tensors,
                widened,
            });
        }
        let (tensors, metadata) = parse_safetensors(bytes).map_err(invalid)?;
        Ok(WeightsFile {
            name: name.into(),
            file,
            format: Format::Safetensors { metadata },
            tensors,
            widened: None,
        })
    }
}

/// A GGUF file's tensors and, when it has Q5_0 ones, their widened copy.
type GgufIndex = (BTreeMap<String, Entry>, Option<Arc<MappedFile>>);

/// The tensors of a GGUF file; Q5_0 ones are widened into one anonymous mapping.
fn gguf_entries(g: &Gguf, bytes: &[u8]) -> std::result::Result<GgufIndex, String> {
    let q8_bytes = |len: usize| len / crate::gguf::Q5_0_BLOCK_BYTES * DType::Q8_0.block().1;
    let total: usize = g
        .tensors
        .values()
        .filter(|t| t.q5_0)
        .map(|t| q8_bytes(t.len))
        .sum();
    let mut wide = (total > 0)
        .then(|| memmap2::MmapMut::map_anon(total))
        .transpose()
        .map_err(|e| format!("cannot allocate {total} bytes to widen Q5_0 tensors: {e}"))?;
    let mut next = 0;
    let mut tensors = BTreeMap::new();
    for (n, t) in &g.tensors {
        let (start, len) = match wide.as_mut() {
            Some(map) if t.q5_0 => {
                let len = q8_bytes(t.len);
                crate::quant::widen_q5_0_to_q8_0(
                    &bytes[t.start..t.start + t.len],
                    &mut map[next..next + len],
                );
                next += len;
                (next - len, len)
            }
            _ => (t.start, t.len),
        };
        tensors.insert(
            n.clone(),
            Entry {
                shape: t.shape.clone(),
                dtype: t.dtype,
                start,
                len,
                widened: t.q5_0,
            },
        );
    }
    let widened = wide
        .map(|m| m.make_read_only())
        .transpose()
        .map_err(|e| format!("cannot seal the widened Q5_0 tensors: {e}"))?
        .map(|map| Arc::new(MappedFile { map }));
    Ok((tensors, widened))
}

type SafetensorsIndex = (BTreeMap<String, Entry>, BTreeMap<String, String>);

fn parse_safetensors(bytes: &[u8]) -> std::result::Result<SafetensorsIndex, String> {
    if bytes.len() < 8 {
        return Err("neither GGUF nor safetensors (too short)".into());
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if header_len > 100 << 20 || 8 + header_len > bytes.len() as u64 {
        return Err(format!(
            "neither GGUF nor a complete safetensors file (header of {header_len} bytes)"
        ));
    }
    let data_start = 8 + header_len as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..data_start])
            .map_err(|e| format!("safetensors header: {e}"))?;
    let mut tensors = BTreeMap::new();
    let mut metadata = BTreeMap::new();
    for (name, v) in header {
        if name == "__metadata__" {
            if let Some(m) = v.as_object() {
                for (k, v) in m {
                    metadata.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
            }
            continue;
        }
        let dtype = match v["dtype"].as_str() {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            other => {
                return Err(format!(
                    "tensor {name}: dtype {other:?} not supported (F32 and F16 are)"
                ));
            }
        };
        let shape: Vec<usize> = v["shape"]
            .as_array()
            .ok_or_else(|| format!("tensor {name}: no shape"))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .map(|d| d as usize)
                    .ok_or_else(|| format!("tensor {name}: bad shape"))
            })
            .collect::<std::result::Result<_, _>>()?;
        let offsets = v["data_offsets"]
            .as_array()
            .ok_or_else(|| format!("tensor {name}: no data_offsets"))?;
        let (begin, end) = match offsets.as_slice() {
            [b, e] => (
                b.as_u64().unwrap_or(u64::MAX) as usize,
                e.as_u64().unwrap_or(0) as usize,
            ),
            _ => return Err(format!("tensor {name}: bad data_offsets")),
        };
        let elems: usize = shape.iter().product::<usize>().max(1);
        let want = elems * dtype.block().1;
        if end < begin || end - begin != want || data_start + end > bytes.len() {
            return Err(format!(
                "tensor {name}: data {begin}..{end} does not fit the file or its shape {shape:?}; the file is truncated or corrupt"
            ));
        }
        let shape = if shape.is_empty() { vec![1] } else { shape };
        tensors.insert(
            name,
            Entry {
                shape,
                dtype,
                start: data_start + begin,
                len: want,
                widened: false,
            },
        );
    }
    Ok((tensors, metadata))
}

type CacheKey = (PathBuf, u64, Option<SystemTime>);

fn cache() -> &'static Mutex<HashMap<CacheKey, Arc<WeightsFile>>> {
    static CACHE: OnceLock<Mutex<HashMap<CacheKey, Arc<WeightsFile>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Open `name` inside `weights_dir` (a plugin's own `weights/` folder).
pub fn open(weights_dir: Option<&Path>, name: &str) -> Result<Arc<WeightsFile>> {
    let dir_path = weights_dir
        .ok_or_else(|| TensorError::NotFound("this plugin has no weights/ folder".into()))?;
    if name.is_empty()
        || Path::new(name).is_absolute()
        || name.split(['/', '\\']).any(|c| c == "..")
    {
        return Err(TensorError::NotFound(format!(
            "{name:?}: weights are opened by a name inside the plugin's own weights/ folder"
        )));
    }
    let dir = Dir::open_ambient_dir(dir_path, ambient_authority())
        .map_err(|e| TensorError::NotFound(format!("weights folder: {e}")))?;
    // cap-std refuses anything (e.g. a symlink) that resolves outside `dir`.
    let file = dir
        .open(name)
        .map_err(|e| TensorError::NotFound(format!("{name}: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| TensorError::NotFound(format!("{name}: {e}")))?;
    if !meta.is_file() {
        return Err(TensorError::NotFound(format!("{name} is not a file")));
    }
    let key: CacheKey = (
        dir_path.join(name),
        meta.len(),
        meta.modified().ok().map(|t| t.into_std()),
    );
    if let Some(hit) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    let std_file = file.into_std();
    // SAFETY: the mapping is read-only. If another process truncates the file while it is
    // mapped, reads past the new end fault; plugin folders are the operator's, and a
    // changed file gets a new cache key (size, mtime) on the next open.
    let map = unsafe { Mmap::map(&std_file) }
        .map_err(|e| TensorError::InvalidFile(format!("{name}: cannot map: {e}")))?;
    let parsed = Arc::new(WeightsFile::parse(name, Arc::new(MappedFile { map }))?);
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, parsed.clone());
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }

    fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        b.extend(data);
        b
    }

    #[test]
    fn opens_gguf_and_safetensors_by_name() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "m.gguf", &crate::gguf::tests::tiny_gguf());
        let data: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        write(
            dir.path(),
            "m.safetensors",
            &safetensors(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"__metadata__":{"format":"pt"}}"#,
                &data,
            ),
        );
        let g = open(Some(dir.path()), "m.gguf").unwrap();
        assert_eq!(
            g.tensor("a").unwrap().to_f32().unwrap().as_ref(),
            &[1., 2., 3., 4., 5., 6.]
        );
        assert_eq!(
            g.metadata("general.architecture"),
            Some(Value::Str("llama".into()))
        );
        let q = g.tensor("q").unwrap();
        assert_eq!(q.to_f32().unwrap()[2], 1.0);
        let s = open(Some(dir.path()), "m.safetensors").unwrap();
        assert_eq!(
            s.tensor("w").unwrap().to_f32().unwrap().as_ref(),
            &[1.5, -2.0]
        );
        assert_eq!(s.metadata("format"), Some(Value::Str("pt".into())));
        assert!(matches!(s.tensor("nope"), Err(TensorError::NotFound(_))));
        // Second open is the cached parse.
        assert!(Arc::ptr_eq(&g, &open(Some(dir.path()), "m.gguf").unwrap()));
    }

    /// A GGUF file with one Q5_0 tensor of the reference fixture's blocks.
    fn q5_0_gguf() -> (Vec<u8>, Vec<f32>) {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/quant_reference.json")).unwrap();
        let case = &fixture["q5_0"];
        let blocks: Vec<u8> = case["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u8)
            .collect();
        let values = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(0u64.to_le_bytes()); // kv
        b.extend(1u64.to_le_bytes());
        b.push(b'w');
        b.extend(2u32.to_le_bytes()); // dims, innermost first: [32, 2]
        b.extend(32u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(6u32.to_le_bytes()); // GGML_TYPE_Q5_0
        b.extend(0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(&blocks);
        (b, values)
    }

    #[test]
    fn q5_0_tensors_are_widened_to_q8_0_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, want) = q5_0_gguf();
        write(dir.path(), "q5.gguf", &bytes);
        let w = open(Some(dir.path()), "q5.gguf").unwrap();
        let t = w.tensor("w").unwrap();
        assert_eq!((t.shape.clone(), t.dtype), (vec![2, 32], DType::Q8_0));
        assert_eq!(t.to_f32().unwrap().as_ref(), want.as_slice());
        // Cut into the second block: a truncated file, not a widened one.
        write(dir.path(), "q5cut.gguf", &bytes[..bytes.len() - 5]);
        let e = open(Some(dir.path()), "q5cut.gguf").err().unwrap();
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    #[test]
    fn corrupt_and_truncated_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let gguf = crate::gguf::tests::tiny_gguf();
        write(dir.path(), "cut.gguf", &gguf[..gguf.len() - 10]);
        write(dir.path(), "junk.bin", b"definitely not weights");
        write(
            dir.path(),
            "cut.safetensors",
            &safetensors(
                r#"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
                &[0; 8],
            ),
        );
        write(
            dir.path(),
            "bf16.safetensors",
            &safetensors(
                r#"{"w":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}"#,
                &[0; 2],
            ),
        );
        for (name, needle) in [
            ("cut.gguf", "truncated"),
            ("junk.bin", "neither GGUF"),
            ("cut.safetensors", "truncated"),
            ("bf16.safetensors", "BF16"),
        ] {
            let e = open(Some(dir.path()), name).err().unwrap();
            assert!(
                matches!(e, TensorError::InvalidFile(_)) && e.to_string().contains(needle),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn other_folders_are_unreachable() {
        let root = tempfile::tempdir().unwrap();
        let mine = root.path().join("mine/weights");
        let theirs = root.path().join("theirs/weights");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::create_dir_all(&theirs).unwrap();
        write(&theirs, "secret.gguf", &crate::gguf::tests::tiny_gguf());
        std::os::unix::fs::symlink(theirs.join("secret.gguf"), mine.join("link.gguf")).unwrap();
        for name in [
            "../../theirs/weights/secret.gguf",
            "/etc/passwd",
            theirs.join("secret.gguf").to_str().unwrap(),
            "link.gguf",
            "missing.gguf",
        ] {
            assert!(
                matches!(open(Some(&mine), name), Err(TensorError::NotFound(_))),
                "{name} must be refused"
            );
        }
        assert!(open(None, "x.gguf").is_err());
    }
}
