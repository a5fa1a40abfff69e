//! Small valid weights files built by hand: the seeds of the weights corpora and the
//! weights folder the `tensor_ops` target opens.

/// A GGUF metadata value.
pub enum Meta {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(&'static str),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Element type id and the elements (all of that type).
    Array(u32, Vec<Meta>),
}

impl Meta {
    fn type_id(&self) -> u32 {
        match self {
            Meta::U8(_) => 0,
            Meta::I8(_) => 1,
            Meta::U16(_) => 2,
            Meta::I16(_) => 3,
            Meta::U32(_) => 4,
            Meta::I32(_) => 5,
            Meta::F32(_) => 6,
            Meta::Bool(_) => 7,
            Meta::Str(_) => 8,
            Meta::Array(..) => 9,
            Meta::U64(_) => 10,
            Meta::I64(_) => 11,
            Meta::F64(_) => 12,
        }
    }

    fn write(&self, b: &mut Vec<u8>) {
        match self {
            Meta::U8(v) => b.push(*v),
            Meta::I8(v) => b.extend(v.to_le_bytes()),
            Meta::U16(v) => b.extend(v.to_le_bytes()),
            Meta::I16(v) => b.extend(v.to_le_bytes()),
            Meta::U32(v) => b.extend(v.to_le_bytes()),
            Meta::I32(v) => b.extend(v.to_le_bytes()),
            Meta::F32(v) => b.extend(v.to_le_bytes()),
            Meta::Bool(v) => b.push(u8::from(*v)),
            Meta::Str(s) => string(b, s),
            Meta::U64(v) => b.extend(v.to_le_bytes()),
            Meta::I64(v) => b.extend(v.to_le_bytes()),
            Meta::F64(v) => b.extend(v.to_le_bytes()),
            Meta::Array(ty, items) => {
                b.extend(ty.to_le_bytes());
                b.extend((items.len() as u64).to_le_bytes());
                for i in items {
                    i.write(b);
                }
            }
        }
    }
}

fn string(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

/// One tensor of a GGUF file: ggml type id, shape outermost first, and its bytes.
pub struct GgufTensor {
    pub name: &'static str,
    pub ggml_type: u32,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// A GGUF (version 3) file with 32-byte alignment.
pub fn gguf(version: u32, metadata: &[(&str, Meta)], tensors: &[GgufTensor]) -> Vec<u8> {
    const ALIGN: usize = 32;
    let mut b = b"GGUF".to_vec();
    b.extend(version.to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        string(&mut b, k);
        b.extend(v.type_id().to_le_bytes());
        v.write(&mut b);
    }
    let mut offset = 0usize;
    for t in tensors {
        string(&mut b, t.name);
        b.extend((t.shape.len() as u32).to_le_bytes());
        for d in t.shape.iter().rev() {
            b.extend(d.to_le_bytes());
        }
        b.extend(t.ggml_type.to_le_bytes());
        b.extend((offset as u64).to_le_bytes());
        offset = (offset + t.data.len()).next_multiple_of(ALIGN);
    }
    for t in tensors {
        while !b.len().is_multiple_of(ALIGN) {
            b.push(0);
        }
        b.extend(&t.data);
    }
    b
}

/// `n` bytes of a fixed pseudo-random pattern, so seeds are reproducible.
pub fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as u8
        })
        .collect()
}

/// Quantized blocks of `blocks` × `bytes` with small, finite f16 scales at `scales`
/// (byte offsets inside each block) and patterned quants elsewhere.
fn blocks(blocks: usize, bytes: usize, scales: &[usize], seed: u32) -> Vec<u8> {
    let mut b = pattern(blocks * bytes, seed);
    for blk in b.chunks_exact_mut(bytes) {
        for &at in scales {
            blk[at..at + 2].copy_from_slice(&half::f16::from_f32(0.03125).to_le_bytes());
        }
    }
    b
}

fn f32s(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// A small GGUF file with a tensor of every element type the host serves (and a Q5_0 one,
/// which it widens), shaped so that each is a valid `matmul` weight and embedding table,
/// and metadata of every value type.
pub fn tiny_gguf() -> Vec<u8> {
    let metadata = [
        ("general.architecture", Meta::Str("llama")),
        ("general.alignment", Meta::U32(32)),
        ("llama.block_count", Meta::U32(2)),
        ("llama.embedding_length", Meta::U64(32)),
        ("llama.rope.freq_base", Meta::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F64(1e-6)),
        ("fuzz.u8", Meta::U8(7)),
        ("fuzz.i8", Meta::I8(-7)),
        ("fuzz.u16", Meta::U16(700)),
        ("fuzz.i16", Meta::I16(-700)),
        ("fuzz.i32", Meta::I32(-70_000)),
        ("fuzz.i64", Meta::I64(-7_000_000_000)),
        ("fuzz.bool", Meta::Bool(true)),
        (
            "tokenizer.ggml.tokens",
            Meta::Array(8, vec![Meta::Str("<s>"), Meta::Str("a"), Meta::Str("b")]),
        ),
        (
            "tokenizer.ggml.scores",
            Meta::Array(6, vec![Meta::F32(0.0), Meta::F32(-1.5), Meta::F32(-2.0)]),
        ),
        (
            "fuzz.nested",
            Meta::Array(9, vec![Meta::Array(4, vec![Meta::U32(1), Meta::U32(2)])]),
        ),
    ];
    let tensors = [
        GgufTensor {
            name: "f32",
            ggml_type: 0,
            shape: vec![4, 8],
            data: f32s((0..32).map(|i| (i as f32 - 16.0) / 8.0)),
        },
        GgufTensor {
            name: "f16",
            ggml_type: 1,
            shape: vec![4, 8],
            data: (0..32)
                .flat_map(|i| half::f16::from_f32((i as f32 - 10.0) / 4.0).to_le_bytes())
                .collect(),
        },
        GgufTensor {
            name: "q4_0",
            ggml_type: 2,
            shape: vec![4, 32],
            data: blocks(4, 18, &[0], 1),
        },
        GgufTensor {
            name: "q4_1",
            ggml_type: 3,
            shape: vec![4, 32],
            data: blocks(4, 20, &[0, 2], 2),
        },
        GgufTensor {
            name: "q5_0",
            ggml_type: 6,
            shape: vec![2, 32],
            data: blocks(2, 22, &[0], 3),
        },
        GgufTensor {
            name: "q8_0",
            ggml_type: 8,
            shape: vec![4, 32],
            data: blocks(4, 34, &[0], 4),
        },
        GgufTensor {
            name: "q4_k",
            ggml_type: 12,
            shape: vec![2, 256],
            data: blocks(2, 144, &[0, 2], 5),
        },
        GgufTensor {
            name: "q6_k",
            ggml_type: 14,
            shape: vec![2, 256],
            data: blocks(2, 210, &[208], 6),
        },
    ];
    gguf(3, &metadata, &tensors)
}

/// A safetensors file: a JSON header (its `data_offsets` as given) and the data.
pub fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend(header.as_bytes());
    b.extend(data);
    b
}

/// A small safetensors file: an f32 matrix, an f16 vector, a scalar and metadata.
pub fn tiny_safetensors() -> Vec<u8> {
    let mut data = f32s((0..8).map(|i| i as f32 * 0.5 - 1.0));
    data.extend(
        [1.0f32, -1.0, 0.5, 2.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes()),
    );
    data.extend(f32s([3.0]));
    safetensors(
        r#"{"__metadata__":{"format":"pt","note":"fuzz seed"},"w":{"dtype":"F32","shape":[2,4],"data_offsets":[0,32]},"b":{"dtype":"F16","shape":[4],"data_offsets":[32,40]},"s":{"dtype":"F32","shape":[],"data_offsets":[40,44]}}"#,
        &data,
    )
}
