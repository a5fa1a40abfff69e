//! Element types and GGUF block formats.
//!
//! Quantized weights stay in their block format in memory (usually a file mapping); the
//! kernels in [`super::quant`] read them block by block. Layouts follow ggml exactly
//! (`ggml-common.h`), since that is what the files contain.

use serde::Serialize;

/// Names follow ggml (`Q4_K`), which model authors know them by.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DType {
    F32,
    F16,
    /// 32 values: f16 scale `d`, 16 bytes of 4-bit `q`; x = d·(q − 8).
    Q4_0,
    /// 32 values: f16 `d`, f16 `m`, 16 bytes of 4-bit `q`; x = d·q + m.
    Q4_1,
    /// 32 values: f16 `d`, 32 × i8 `q`; x = d·q.
    Q8_0,
    /// 256 values in 8 sub-blocks with 6-bit scales and mins.
    Q4_K,
    /// 256 values of 6 bits in 16 sub-blocks with i8 scales.
    Q6_K,
}

impl DType {
    /// From ggml's type id (`enum ggml_type`).
    pub fn from_ggml(id: u32) -> Option<DType> {
        Some(match id {
            0 => DType::F32,
            1 => DType::F16,
            2 => DType::Q4_0,
            3 => DType::Q4_1,
            8 => DType::Q8_0,
            12 => DType::Q4_K,
            14 => DType::Q6_K,
            _ => return None,
        })
    }

    /// (values per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            DType::F32 => (1, 4),
            DType::F16 => (1, 2),
            DType::Q4_0 => (32, 18),
            DType::Q4_1 => (32, 20),
            DType::Q8_0 => (32, 34),
            DType::Q4_K => (256, 144),
            DType::Q6_K => (256, 210),
        }
    }

    pub fn is_quantized(self) -> bool {
        !matches!(self, DType::F32 | DType::F16)
    }

    /// Bytes needed for `elems` values, if that is a whole number of blocks.
    pub fn bytes_for(self, elems: usize) -> Option<usize> {
        let (per, bytes) = self.block();
        elems
            .is_multiple_of(per)
            .then(|| (elems / per).checked_mul(bytes))
            .flatten()
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q8_0 => "q8_0",
            DType::Q4_K => "q4_k",
            DType::Q6_K => "q6_k",
        }
    }
}
