//! Weights files (GGUF and safetensors), opened by name from a plugin's own `weights/`
//! folder, memory-mapped, parsed once and shared.
//!
//! Opening goes through a cap-std `Dir` for the plugin's folder, so a name like
//! `../other-plugin/weights/model.gguf`, an absolute path, or a symlink leading out is
//! refused. The file is opened without blocking and must be a regular file, checked on the
//! opened handle (a named pipe or a device node in `weights/` is an error, not a hang), and
//! its size is that handle's. Parsed files are cached by the host (keyed by canonical path,
//! size and modification time), so a fresh plugin instance per round costs a hash-map
//! look-up, not a re-parse of a 50,000-entry tokenizer.

use crate::gguf::{Gguf, Value};
use crate::{DType, Result, Storage, Tensor, TensorError};
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use memmap2::Mmap;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

/// Largest weights file opened (it is mapped whole).
pub const MAX_WEIGHTS_FILE_BYTES: u64 = 64 << 30;

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

    /// A read-only anonymous mapping holding a copy of `bytes`, so that bytes in memory
    /// (the fuzz targets) are parsed exactly as a mapped file is.
    pub fn from_bytes(bytes: &[u8]) -> std::io::Result<MappedFile> {
        let mut map = memmap2::MmapMut::map_anon(bytes.len())?;
        map.copy_from_slice(bytes);
        Ok(MappedFile {
            map: map.make_read_only()?,
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
        // Parser messages may quote the file (a tensor's name): keep them short.
        let invalid = |m: String| {
            let short: String = m.chars().take(300).collect();
            let cut = if short.len() < m.len() { "…" } else { "" };
            TensorError::InvalidFile(format!("{name}: {short}{cut}"))
        };
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
        // A scalar (`[]`) holds one value; a shape with a 0 holds none.
        let want = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .and_then(|elems| elems.checked_mul(dtype.block().1))
            .ok_or_else(|| format!("tensor {name}: shape {shape:?} is too large"))?;
        if end < begin
            || end - begin != want
            || data_start.checked_add(end).is_none_or(|e| e > bytes.len())
        {
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
    let (file, meta) = open_regular(&dir, name)?;
    let key: CacheKey = (
        dir_path.join(name),
        meta.len(),
        meta.modified().ok().map(|t| t.into_std()),
    );
    if let Some(hit) = cache().lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(hit.clone());
    }
    let std_file = file.into_std();
    // The length is the one fstat gave for this handle, checked above.
    let len = usize::try_from(meta.len())
        .map_err(|_| TensorError::InvalidFile(format!("{name}: too large to map")))?;
    // SAFETY: the mapping is read-only. If another process truncates the file while it is
    // mapped, reads past the new end fault; plugin folders are the operator's, and a
    // changed file gets a new cache key (size, mtime) on the next open.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(&std_file) }
        .map_err(|e| TensorError::InvalidFile(format!("{name}: cannot map: {e}")))?;
    let parsed = Arc::new(WeightsFile::parse(name, Arc::new(MappedFile { map }))?);
    cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, parsed.clone());
    Ok(parsed)
}

/// Open `name` inside `dir` (cap-std: nothing that resolves outside it) for mapping:
/// without blocking (`O_NONBLOCK`, so a named pipe does not wait for a writer), and only
/// if the opened handle is a regular file of at most [`MAX_WEIGHTS_FILE_BYTES`]. Its type is
/// also looked at before the open, so a device node is normally not even opened.
fn open_regular(dir: &Dir, name: &str) -> Result<(cap_std::fs::File, cap_std::fs::Metadata)> {
    // cap-std refuses anything (e.g. a symlink) that resolves outside `dir`.
    let looked = dir
        .metadata(name)
        .map_err(|e| TensorError::NotFound(format!("{name}: {e}")))?;
    regular(name, &looked)?;
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    cap_std::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = dir
        .open_with(name, &options)
        .map_err(|e| TensorError::NotFound(format!("{name}: {e}")))?;
    let meta = checked_handle(name, &file)?;
    Ok((file, meta))
}

/// The metadata of an opened weights file (`fstat`, what counts: the file may have been
/// swapped since it was looked at), if it is a regular file of a size that can be mapped.
fn checked_handle(name: &str, file: &cap_std::fs::File) -> Result<cap_std::fs::Metadata> {
    let meta = file
        .metadata()
        .map_err(|e| TensorError::NotFound(format!("{name}: {e}")))?;
    regular(name, &meta)?;
    if meta.len() == 0 {
        return Err(TensorError::InvalidFile(format!(
            "{name} is empty: neither GGUF nor safetensors"
        )));
    }
    if meta.len() > MAX_WEIGHTS_FILE_BYTES {
        return Err(TensorError::InvalidFile(format!(
            "{name} is {} bytes, more than the {MAX_WEIGHTS_FILE_BYTES} byte limit",
            meta.len()
        )));
    }
    Ok(meta)
}

/// An error naming what `name` is, unless it is a regular file.
fn regular(name: &str, meta: &cap_std::fs::Metadata) -> Result<()> {
    let t = meta.file_type();
    #[cfg(unix)]
    use cap_std::fs::FileTypeExt as _;
    #[cfg(not(unix))]
    let (is_fifo, is_socket, is_char, is_block) = (false, false, false, false);
    #[cfg(unix)]
    let (is_fifo, is_socket, is_char, is_block) = (
        t.is_fifo(),
        t.is_socket(),
        t.is_char_device(),
        t.is_block_device(),
    );
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "a folder"
    } else if is_fifo {
        "a named pipe (FIFO)"
    } else if is_socket {
        "a socket"
    } else if is_char {
        "a character device"
    } else if is_block {
        "a block device"
    } else {
        "a special file"
    };
    Err(TensorError::InvalidFile(format!(
        "{name} is {kind}, not a regular file; weights must be plain files"
    )))
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
    fn q5_0_embedding_rows_are_the_widened_rows() {
        // An embedding table stored as Q5_0 (Qwen2.5's token_embd) goes through the
        // embedding kernel like any Q8_0 table.
        let dir = tempfile::tempdir().unwrap();
        let (bytes, want) = q5_0_gguf();
        write(dir.path(), "q5e.gguf", &bytes);
        let w = open(Some(dir.path()), "q5e.gguf").unwrap();
        let table = w.tensor("w").unwrap();
        let rows = crate::cpu::embedding(&table, &[1, 0, 1], crate::Budget::NONE).unwrap();
        assert_eq!(rows.shape, vec![3, 32]);
        let got = rows.to_f32().unwrap();
        let expect: Vec<f32> = [&want[32..], &want[..32], &want[32..]].concat();
        assert_eq!(got.as_ref(), expect.as_slice());
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

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    }

    /// `open` on another thread, failing if it has not returned within 5 s (it takes
    /// milliseconds; opening a FIFO for reading the ordinary way waits for a writer).
    fn open_promptly(dir: &Path, name: &str) -> Result<Arc<WeightsFile>> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (dir, name2) = (dir.to_path_buf(), name.to_string());
        std::thread::spawn(move || {
            let _ = tx.send(open(Some(&dir), &name2));
        });
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("opening {name} hung"))
    }

    #[test]
    fn pipes_devices_and_folders_are_errors_not_hangs() {
        let dir = tempfile::tempdir().unwrap();
        mkfifo(&dir.path().join("pipe.gguf"));
        mkfifo(&dir.path().join("fed.gguf"));
        // A FIFO someone keeps writing into (O_RDWR opens it without waiting for a
        // reader; the thread blocks once the pipe is full and is left behind).
        let fed = dir.path().join("fed.gguf");
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(fed)
                .unwrap();
            let mut block = b"GGUF".to_vec();
            block.resize(4096, 0);
            while std::io::Write::write_all(&mut f, &block).is_ok() {}
        });
        std::fs::create_dir(dir.path().join("folder.gguf")).unwrap();
        std::fs::write(dir.path().join("empty.gguf"), b"").unwrap();
        for (name, needle) in [
            ("pipe.gguf", "named pipe (FIFO)"),
            ("fed.gguf", "named pipe (FIFO)"),
            ("folder.gguf", "a folder"),
            ("empty.gguf", "empty"),
        ] {
            let e = open_promptly(dir.path(), name).err().unwrap();
            assert!(
                matches!(e, TensorError::InvalidFile(_)) && e.to_string().contains(needle),
                "{name}: {e}"
            );
        }
        // A device node inside the folder, where mknod is permitted (root).
        let c = std::ffi::CString::new(dir.path().join("zero.gguf").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; makedev(1, 5) is /dev/zero.
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o644, libc::makedev(1, 5)) } == 0 {
            let e = open_promptly(dir.path(), "zero.gguf").err().unwrap();
            assert!(
                matches!(e, TensorError::InvalidFile(_))
                    && e.to_string().contains("character device"),
                "{e}"
            );
        } else {
            eprintln!("mknod not permitted here: the device node case is skipped");
        }
        // A symlink to /dev/zero leads out of the folder: refused by cap-std.
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("link.gguf")).unwrap();
        assert!(matches!(
            open_promptly(dir.path(), "link.gguf"),
            Err(TensorError::NotFound(_))
        ));
    }

    #[test]
    fn parser_messages_are_short() {
        let dir = tempfile::tempdir().unwrap();
        let long = "n".repeat(100_000);
        let header = format!(r#"{{"{long}":{{"dtype":"BF16","shape":[1],"data_offsets":[0,2]}}}}"#);
        write(
            dir.path(),
            "long.safetensors",
            &safetensors(&header, &[0; 2]),
        );
        let e = open(Some(dir.path()), "long.safetensors").err().unwrap();
        assert!(matches!(e, TensorError::InvalidFile(_)), "{e}");
        assert!(e.to_string().len() < 1000, "{} bytes", e.to_string().len());
    }

    #[test]
    fn the_opened_handle_is_checked() {
        // A name that is a regular file when looked at and a FIFO once opened takes a
        // race to stage; check the handle directly: an opened FIFO or device is refused,
        // an opened regular file gives its own size.
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p.gguf");
        mkfifo(&fifo);
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let e = checked_handle("p.gguf", &cap_std::fs::File::from_std(opened))
            .err()
            .unwrap();
        assert!(e.to_string().contains("named pipe"), "{e}");
        let zero = std::fs::File::open("/dev/zero").unwrap();
        let e = checked_handle("z.gguf", &cap_std::fs::File::from_std(zero))
            .err()
            .unwrap();
        assert!(e.to_string().contains("character device"), "{e}");
        let gguf = crate::gguf::tests::tiny_gguf();
        std::fs::write(dir.path().join("m.gguf"), &gguf).unwrap();
        let m = std::fs::File::open(dir.path().join("m.gguf")).unwrap();
        let meta = checked_handle("m.gguf", &cap_std::fs::File::from_std(m)).unwrap();
        assert_eq!(meta.len(), gguf.len() as u64);
    }

    /// Found by the `safetensors` fuzz target: a shape with a 0 was taken to hold one
    /// value, and shape products and offsets could overflow.
    #[test]
    fn safetensors_sizes_are_exact_and_checked() {
        let parse = |header: &str, data: &[u8]| {
            let file = Arc::new(MappedFile::from_bytes(&safetensors(header, data)).unwrap());
            WeightsFile::parse("t.safetensors", file)
        };
        let empty = r#"{"e":{"dtype":"F32","shape":[0,2],"data_offsets":[0,0]}}"#;
        let w = parse(empty, &[]).unwrap();
        let t = w.tensor("e").unwrap();
        assert_eq!(
            (t.shape.clone(), t.to_f32().unwrap().len()),
            (vec![0, 2], 0)
        );
        let scalar = r#"{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#;
        let w = parse(scalar, &2.5f32.to_le_bytes()).unwrap();
        assert_eq!(w.tensor("s").unwrap().to_f32().unwrap().as_ref(), &[2.5]);
        for header in [
            // Four bytes for no values.
            r#"{"h":{"dtype":"F32","shape":[0,2],"data_offsets":[0,4]}}"#,
            // 2^62 × 4 values: the element count overflows.
            r#"{"h":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,4]}}"#,
            // 2^62 values of 4 bytes: the byte count overflows (to 0).
            r#"{"h":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}"#,
            // An end offset that overflows once the header is added.
            r#"{"h":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551608,18446744073709551612]}}"#,
        ] {
            let e = parse(header, &[0; 4]).err().unwrap();
            assert!(matches!(e, TensorError::InvalidFile(_)), "{header}: {e}");
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
