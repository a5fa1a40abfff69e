//! A GGUF reader over a memory-mapped file.
//!
//! GGUF (llama.cpp's model format) is a header of typed key/value metadata (architecture,
//! hyper-parameters, the tokenizer) and tensor descriptors, followed by aligned tensor
//! data. The host maps the file and hands out tensors that point into the mapping, so
//! weights are never copied, least of all through guest memory.
//!
//! The file is untrusted input: every length and offset is bounds-checked, counts are
//! capped, and a corrupt or truncated file is an error value naming what is wrong.

use crate::dtype::DType;
use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_TENSORS: u64 = 1 << 20;
const MAX_KV: u64 = 1 << 16;
const MAX_STRING: u64 = 64 << 20;
const MAX_ARRAY: u64 = 1 << 26;
const MAX_DIMS: u32 = 4;
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's type id of Q5_0: 32 values, f16 `d`, 4 bytes of high bits, 16 of low nibbles.
const GGML_Q5_0: u32 = 6;
pub const Q5_0_BLOCK_BYTES: usize = 22;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid GGUF file: {0}")]
pub struct GgufError(pub String);

fn bad(msg: impl Into<String>) -> GgufError {
    GgufError(msg.into())
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions outermost first (GGUF stores them innermost first; we reverse), so a
    /// weight matrix is `[rows, cols]` with rows of `cols` contiguous elements.
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Byte range within the file.
    pub start: usize,
    pub len: usize,
    /// Stored as ggml's Q5_0, which the loader widens losslessly to `dtype` (Q8_0): the
    /// kernels and the plugin contract then need no fifth 32-value format.
    pub q5_0: bool,
}

#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: BTreeMap<String, TensorInfo>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GgufError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                bad(format!(
                    "truncated: needed {n} bytes at offset {} of {}",
                    self.pos,
                    self.data.len()
                ))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        if len > MAX_STRING {
            return Err(bad(format!("string of {len} bytes is implausibly long")));
        }
        let bytes = self.take(len as usize)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| bad("a string is not UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U64(u64::from(self.u8()?)),
            1 => Value::I64(i64::from(self.u8()? as i8)),
            2 => Value::U64(u64::from(u16::from_le_bytes(
                self.take(2)?.try_into().expect("2"),
            ))),
            3 => Value::I64(i64::from(i16::from_le_bytes(
                self.take(2)?.try_into().expect("2"),
            ))),
            4 => Value::U64(u64::from(self.u32()?)),
            5 => Value::I64(i64::from(self.u32()? as i32)),
            6 => Value::F64(f64::from(f32::from_bits(self.u32()?))),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(bad("arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let len = self.u64()?;
                if len > MAX_ARRAY {
                    return Err(bad(format!("array of {len} elements is implausibly long")));
                }
                let mut v = Vec::with_capacity((len as usize).min(1 << 16));
                for _ in 0..len {
                    v.push(self.value(elem, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(bad(format!("unknown metadata value type {other}"))),
        })
    }
}

impl Gguf {
    /// Parse the header of a GGUF file held in `data` (normally a memory map).
    pub fn parse(data: &[u8]) -> Result<Gguf, GgufError> {
        let mut c = Cursor { data, pos: 0 };
        if c.take(4).map_err(|_| bad("file too short to be GGUF"))? != MAGIC {
            return Err(bad("missing GGUF magic bytes"));
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(bad(format!(
                "unsupported GGUF version {version} (2 and 3 are supported)"
            )));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
            return Err(bad(format!(
                "implausible counts: {n_tensors} tensors, {n_kv} metadata keys"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty, 0)?;
            metadata.insert(key, v);
        }
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(bad(format!("tensor {name}: {n_dims} dimensions")));
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = c.u64()?;
                if d == 0 || d > (1 << 32) {
                    return Err(bad(format!("tensor {name}: dimension {d}")));
                }
                shape.push(d as usize);
            }
            shape.reverse();
            let ty = c.u32()?;
            let q5_0 = ty == GGML_Q5_0;
            let dtype = if q5_0 {
                Some(DType::Q8_0)
            } else {
                DType::from_ggml(ty)
            }
            .ok_or_else(|| bad(format!("tensor {name}: unsupported type {ty}")))?;
            let offset = c.u64()?;
            infos.push((name, shape, dtype, q5_0, offset));
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_ALIGNMENT);
        if alignment == 0 || !alignment.is_power_of_two() || alignment > 1 << 16 {
            return Err(bad(format!("bad alignment {alignment}")));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let mut tensors = BTreeMap::new();
        for (name, shape, dtype, q5_0, offset) in infos {
            let elems = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .ok_or_else(|| bad(format!("tensor {name}: too many elements")))?;
            let stored = if q5_0 {
                elems
                    .is_multiple_of(32)
                    .then_some(elems / 32 * Q5_0_BLOCK_BYTES)
            } else {
                dtype.bytes_for(elems)
            };
            let len = stored.ok_or_else(|| {
                bad(format!(
                    "tensor {name}: {elems} elements is not a whole number of {dtype:?} blocks"
                ))
            })?;
            let start = data_start
                .checked_add(offset)
                .filter(|s| s % alignment == 0 || offset == 0);
            let start = start
                .ok_or_else(|| bad(format!("tensor {name}: misaligned offset {offset}")))?
                as usize;
            let end = start.checked_add(len).filter(|&e| e <= data.len()).ok_or_else(|| {
                bad(format!("tensor {name}: data {start}..{} lies past the end of the file ({} bytes); the file is truncated", start.saturating_add(len), data.len()))
            })?;
            let _ = end;
            if tensors
                .insert(
                    name.clone(),
                    TensorInfo {
                        name: name.clone(),
                        shape,
                        dtype,
                        start,
                        len,
                        q5_0,
                    },
                )
                .is_some()
            {
                return Err(bad(format!("tensor {name} appears twice")));
            }
        }
        Ok(Gguf {
            version,
            metadata,
            tensors,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small GGUF file built by hand: two metadata keys and two tensors.
    pub fn tiny_gguf() -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        b.extend(MAGIC);
        b.extend(3u32.to_le_bytes());
        b.extend(2u64.to_le_bytes()); // tensors
        b.extend(2u64.to_le_bytes()); // kv
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(30u32.to_le_bytes());
        // tensor "a": f32 [2, 3] (ne = [3, 2]) at 0
        s(&mut b, "a");
        b.extend(2u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        // tensor "q": q8_0 [32] at 32
        s(&mut b, "q");
        b.extend(1u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(32u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
            b.extend(v.to_le_bytes());
        }
        b.extend([0u8; 8]); // pad to 32
        // q8_0 block: f16 scale 0.5, then 32 i8 values 0..32
        b.extend(half::f16::from_f32(0.5).to_le_bytes());
        b.extend((0..32).map(|i| i as u8));
        b
    }

    #[test]
    fn parses_a_small_file() {
        let data = tiny_gguf();
        let g = Gguf::parse(&data).unwrap();
        assert_eq!(
            g.get("general.architecture").and_then(Value::as_str),
            Some("llama")
        );
        assert_eq!(g.get("llama.block_count").and_then(Value::as_u64), Some(30));
        let a = &g.tensors["a"];
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.dtype, DType::F32);
        let q = &g.tensors["q"];
        assert_eq!(q.dtype, DType::Q8_0);
        assert_eq!(q.len, 34);
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let data = tiny_gguf();
        for cut in [0, 3, 10, 40, 100, data.len() - 1] {
            let e = Gguf::parse(&data[..cut]).unwrap_err();
            assert!(
                e.0.contains("truncated") || e.0.contains("short") || e.0.contains("past the end"),
                "{cut}: {e}"
            );
        }
        assert!(
            Gguf::parse(b"NOPE\x03\0\0\0")
                .unwrap_err()
                .0
                .contains("magic")
        );
        let mut bad_version = data.clone();
        bad_version[4] = 9;
        assert!(Gguf::parse(&bad_version).unwrap_err().0.contains("version"));
        // An offset near the end of the address space: the range end overflows.
        let mut far = b"GGUF".to_vec();
        far.extend(3u32.to_le_bytes());
        far.extend(1u64.to_le_bytes()); // tensors
        far.extend(0u64.to_le_bytes()); // kv
        far.extend(0u64.to_le_bytes()); // name ""
        far.extend(1u32.to_le_bytes());
        far.extend(0x30000u64.to_le_bytes());
        far.extend(0u32.to_le_bytes()); // f32
        far.extend(0xffff_ffff_ffff_0000u64.to_le_bytes());
        let e = Gguf::parse(&far).unwrap_err().0;
        assert!(
            e.contains(&format!(
                "data {}..{} lies past the end",
                0xffff_ffff_ffff_0040u64,
                u64::MAX
            )),
            "{e}"
        );
        // Flip every byte of the header in turn: never a panic.
        for i in 0..data.len().min(200) {
            let mut d = data.clone();
            d[i] ^= 0xff;
            let _ = Gguf::parse(&d);
        }
    }
}
