//! The wgpu backend: WGSL compute kernels for the matrix products (feature `wgpu`).
//!
//! Selection: a hardware adapter (discrete, integrated or virtual GPU) is used when one
//! exists; a software adapter (lavapipe, WARP, SwiftShader: `DeviceType::Cpu`) is only
//! ever used when asked for explicitly (tests), since it is hundreds of times slower than
//! the CPU backend. Pipelines are built once per device. Device errors are captured with
//! error scopes and an uncaptured-error handler and returned as errors, never fatal.
//!
//! Scope today: f32 matmul (register-tiled, 4×4 outputs per thread) and the quantized
//! matrix-vector/matrix products (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K) run on the GPU; everything else runs
//! on the CPU backend. Operands are uploaded per call and the result read back, except
//! weights, which stay resident on the device after first use. Keeping activations
//! resident and batching a whole step into one submission is the next step.

use crate::weights::MappedFile;
use crate::{DType, Result, Storage, Tensor, TensorError, shape_err};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use wgpu::util::DeviceExt;

const MATMUL_WGSL: &str = include_str!("gpu/matmul.wgsl");
const MATVEC_WGSL: &str = include_str!("gpu/matvec_quant.wgsl");

/// Which adapters may be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// Hardware GPUs only (what `auto` uses).
    HardwareOnly,
    /// Also software rasterisers such as lavapipe (tests on machines without a GPU).
    AllowSoftware,
}

type ResidentWeights = HashMap<(usize, usize), (Weak<MappedFile>, Arc<wgpu::Buffer>)>;

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    matmul: wgpu::ComputePipeline,
    matvec: wgpu::ComputePipeline,
    /// Quantized weights uploaded once, keyed by (mapping address, start). Each entry
    /// holds a `Weak` to its mapping: that keeps the address from being reused by a new
    /// mapping (a reloaded file) while the entry exists, and tells when the mapping is
    /// gone, so the entry and its GPU memory can be dropped.
    resident: Mutex<ResidentWeights>,
    errors: Arc<Mutex<Vec<String>>>,
}

fn gpu_err(msg: impl std::fmt::Display) -> TensorError {
    TensorError::Dtype(format!("gpu: {msg}"))
}

impl Gpu {
    /// Open the first acceptable adapter, or say why none is.
    pub fn open(policy: AdapterPolicy) -> std::result::Result<Gpu, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(desc_backends()));
        let mut candidates: Vec<wgpu::Adapter> = adapters
            .into_iter()
            .filter(|a| {
                policy == AdapterPolicy::AllowSoftware
                    || a.get_info().device_type != wgpu::DeviceType::Cpu
            })
            .collect();
        // Prefer discrete, then integrated, then anything else.
        candidates.sort_by_key(|a| match a.get_info().device_type {
            wgpu::DeviceType::DiscreteGpu => 0,
            wgpu::DeviceType::IntegratedGpu => 1,
            wgpu::DeviceType::VirtualGpu => 2,
            _ => 3,
        });
        let adapter = candidates.into_iter().next().ok_or_else(|| match policy {
            AdapterPolicy::HardwareOnly => {
                "no hardware GPU adapter (software adapters are not used automatically)".to_string()
            }
            AdapterPolicy::AllowSoftware => {
                "no GPU adapter at all (install mesa-vulkan-drivers for lavapipe)".to_string()
            }
        })?;
        let info = adapter.get_info();
        let limits = wgpu::Limits::downlevel_defaults().using_resolution(adapter.limits());
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: adapter.limits().max_storage_buffer_binding_size,
            max_buffer_size: adapter.limits().max_buffer_size,
            ..limits
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("apiary"),
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| format!("cannot open {}: {e}", info.name))?;
        let errors = Arc::new(Mutex::new(Vec::new()));
        {
            let errors = errors.clone();
            device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.to_string());
            }));
        }
        let pipeline = |src: &str, label: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let matmul = pipeline(MATMUL_WGSL, "matmul");
        let matvec = pipeline(MATVEC_WGSL, "matvec_quant");
        Ok(Gpu {
            device,
            queue,
            info,
            matmul,
            matvec,
            resident: Mutex::new(HashMap::new()),
            errors,
        })
    }

    /// Whether this backend has a kernel for `a · b` (else the CPU backend runs it).
    pub fn supports(&self, a: &Tensor, b: &Tensor) -> bool {
        // Every operand must fit one storage binding (128 MiB on many devices): a larger
        // one (Gemma 3's 262,144-row embedding table) stays on the CPU rather than fail.
        let limit = self.device.limits().max_storage_buffer_binding_size;
        let bytes = |t: &Tensor| {
            let (per, size) = t.dtype.block();
            (t.numel() / per * size) as u64
        };
        let rows = a.numel() / a.shape.last().copied().unwrap_or(1).max(1);
        let widest = b.shape.iter().copied().max().unwrap_or(0);
        let fits = bytes(a) <= limit && bytes(b) <= limit && (rows * widest * 4) as u64 <= limit;
        fits && a.shape.len() <= 2
            && b.shape.len() == 2
            && matches!(
                b.dtype,
                DType::F32 | DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q4_K | DType::Q6_K
            )
    }

    pub fn name(&self) -> String {
        format!(
            "wgpu ({}, {:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    fn storage(&self, data: &[u8], label: &str) -> wgpu::Buffer {
        // Buffers may not be empty and must be 4-byte multiples.
        let mut bytes = data.to_vec();
        bytes.resize(data.len().max(4).next_multiple_of(4), 0);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            })
    }

    fn uniform(&self, words: &[u32]) -> wgpu::Buffer {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &bytes,
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Run `pipeline` over `buffers` (binding i = buffers[i]) and read back `out_len` f32
    /// from `buffers[out]`.
    fn run(
        &self,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        out: usize,
        out_len: usize,
        groups: (u32, u32, u32),
        dl: crate::Deadline,
    ) -> Result<Vec<f32>> {
        // No new GPU work once the call's budget is spent; work already in flight is
        // bounded by the wait below.
        dl.check()?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &layout,
            entries: &entries,
        });
        let size = (out_len * 4).max(4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        enc.copy_buffer_to_buffer(buffers[out], 0, &staging, 0, size);
        self.queue.submit([enc.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // GPU work may not outlive the call's budget: wait at most until the deadline.
        let timeout =
            dl.0.map(|t| t.saturating_duration_since(std::time::Instant::now()));
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: None,
            timeout,
        }) {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => return Err(TensorError::Deadline),
            Err(e) => return Err(gpu_err(e)),
        }
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err(e));
        }
        if let Some(e) = self.errors.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Err(gpu_err(e));
        }
        rx.recv().map_err(gpu_err)?.map_err(gpu_err)?;
        let data = slice.get_mapped_range().map_err(gpu_err)?;
        let out: Vec<f32> = data
            .chunks_exact(4)
            .take(out_len)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        drop(data);
        staging.unmap();
        Ok(out)
    }

    /// `a · b` or `a · bᵀ`, as [`crate::cpu::matmul`] for 2-D `b` (batched products stay on
    /// the CPU backend).
    pub fn matmul(
        &self,
        a: &Tensor,
        b: &Tensor,
        transpose_b: bool,
        dl: crate::Deadline,
    ) -> Result<Tensor> {
        let av = a.owned()?;
        let k = *a.shape.last().unwrap_or(&0);
        if b.shape.len() != 2 {
            return shape_err(format!("gpu matmul: b must be a matrix, got {:?}", b.shape));
        }
        let (bk, m) = if transpose_b {
            (b.shape[1], b.shape[0])
        } else {
            (b.shape[0], b.shape[1])
        };
        if bk != k || k == 0 {
            return shape_err(format!(
                "inner dimensions differ: {:?} · {:?} (transpose_b={transpose_b})",
                a.shape, b.shape
            ));
        }
        let n = av.len() / k;
        let mut shape = a.shape.clone();
        *shape.last_mut().expect("non-empty") = m;
        let a_buf = self.storage(bytemuck_f32(av), "a");
        let out_buf = self.storage(&vec![0u8; n * m * 4], "out");
        let data = match b.dtype {
            DType::F32 => {
                let bv = b.to_f32()?;
                let b_buf = self.storage(bytemuck_f32(&bv), "b");
                let params = self.uniform(&[n as u32, k as u32, m as u32, u32::from(transpose_b)]);
                let groups = ((m as u32).div_ceil(32), (n as u32).div_ceil(32), 1);
                self.run(
                    &self.matmul,
                    &[&params, &a_buf, &b_buf, &out_buf],
                    3,
                    n * m,
                    groups,
                    dl,
                )?
            }
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q4_K | DType::Q6_K => {
                if !transpose_b {
                    return Err(TensorError::Dtype(format!(
                        "{} weights need transpose_b",
                        b.dtype.name()
                    )));
                }
                let kind = match b.dtype {
                    DType::Q4_0 => 0u32,
                    DType::Q4_1 => 1,
                    DType::Q8_0 => 2,
                    DType::Q4_K => 3,
                    _ => 4,
                };
                let (per_block, block_bytes) = b.dtype.block();
                if !k.is_multiple_of(per_block) {
                    return shape_err(format!(
                        "row length {k} is not a whole number of {per_block}-value blocks"
                    ));
                }
                let w = self.resident_weights(b)?;
                let params = self.uniform(&[
                    n as u32,
                    k as u32,
                    m as u32,
                    kind,
                    block_bytes as u32,
                    per_block as u32,
                    0,
                    0,
                ]);
                // One workgroup per output row; rows past 65,535 go to the second dimension.
                let groups = ((m as u32).min(65_535), (m as u32).div_ceil(65_535), 1);
                self.run(
                    &self.matvec,
                    &[&params, &a_buf, &w, &out_buf],
                    3,
                    n * m,
                    groups,
                    dl,
                )?
            }
            other => {
                return Err(TensorError::Dtype(format!(
                    "the wgpu backend has no {} kernel yet",
                    other.name()
                )));
            }
        };
        Ok(Tensor {
            shape,
            dtype: DType::F32,
            storage: Storage::Owned(data),
        })
    }

    fn resident_weights(&self, b: &Tensor) -> Result<Arc<wgpu::Buffer>> {
        let Storage::Mapped { file, start, .. } = &b.storage else {
            return Err(TensorError::Dtype(
                "quantized tensors come from weights files".into(),
            ));
        };
        let key = (Arc::as_ptr(file) as usize, *start);
        let mut cache = self.resident.lock().unwrap_or_else(|p| p.into_inner());
        // Mappings dropped since (an unloaded plugin, a replaced file) free their buffers.
        cache.retain(|_, (weak, _)| weak.strong_count() > 0);
        if let Some((_, buf)) = cache.get(&key) {
            return Ok(buf.clone());
        }
        let bytes = b
            .bytes()
            .ok_or_else(|| TensorError::InvalidFile("mapping too short".into()))?;
        let buf = Arc::new(self.storage(bytes, "weights"));
        cache.insert(key, (Arc::downgrade(file), buf.clone()));
        Ok(buf)
    }
}

fn desc_backends() -> wgpu::Backends {
    wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns; u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}
