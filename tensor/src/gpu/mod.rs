//! The wgpu backend: WGSL compute kernels on a GPU (feature `wgpu`).
//!
//! Selection: a hardware adapter (discrete, integrated or virtual GPU) is used when one
//! exists; a software adapter (lavapipe, WARP, SwiftShader: `DeviceType::Cpu`) is only
//! ever used when asked for explicitly (tests), since it is hundreds of times slower than
//! the CPU backend. Pipelines are built once per device.
//!
//! **Residency.** Results stay on the device ([`Storage::Device`]) and the next kernel
//! reads them there, so a decode step moves only the token's embedding row up and one
//! logits row down (once: the token and its log-probability are both taken from that
//! copy).
//!
//! **Streams.** Kernels are *recorded*, not submitted one by one, into the command
//! encoder of a [`Stream`]: the chain of work a result depends on. A kernel joins the
//! stream of a device operand that still has work recorded (a kernel on host values
//! only starts a new one), and a device buffer remembers the stream that last wrote it. Reading a value back
//! submits that stream (and, so a long prompt does not build one huge command buffer,
//! a stream is also submitted after [`MAX_PENDING`] dispatches); a kernel whose
//! operands come from two streams submits the other one first, which keeps every read
//! after its writes. A greedy decode step is therefore one submission. Tensors belong to
//! one plugin instance, so streams are never shared between plugins: one plugin's read
//! never runs or waits for another's work, and recorded work nobody can read any more
//! (the instance ended, or its deadline passed before it read) is dropped with its
//! stream without ever reaching the GPU.
//!
//! **Errors.** Shapes are validated on the host before anything is recorded. Device
//! errors (out of memory, a lost device, a validation error that slipped through) are
//! captured by an error scope around each submission and by an uncaptured-error handler,
//! and returned as [`TensorError`]s, never fatal to the host.
//!
//! **Budget.** No new work is recorded or submitted once the call's deadline has passed,
//! and waiting for a result stops at the deadline. Work already submitted cannot be
//! cancelled (wgpu has no way to); what one submission holds is bounded by
//! [`MAX_PENDING`] dispatches over tensors within the plugin's quota.

mod ops;

pub use ops::{BinaryOp, RowOp, UnaryOp};

use crate::weights::MappedFile;
use crate::{Budget, DType, Result, Storage, Tensor, TensorError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use wgpu::util::DeviceExt;

/// Dispatches recorded before a stream is submitted even though nothing has been read
/// yet (a long prompt): keeps the first results coming and the encoder small.
pub const MAX_PENDING: u32 = 512;

/// Which adapters may be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterPolicy {
    /// Hardware GPUs only (what `auto` uses).
    HardwareOnly,
    /// Also software rasterisers such as lavapipe (tests on machines without a GPU).
    AllowSoftware,
}

type ResidentWeights = HashMap<(usize, usize), (Weak<MappedFile>, Arc<wgpu::Buffer>)>;

/// Device tensors up to this many values keep their values on the host once read: the
/// logits of a decode step are read once for the token, then again for its
/// log-probability, and the second read must not cost a second submission.
pub const HOST_COPY_MAX: usize = 1 << 20;

/// f32 values in a device buffer: the storage of a tensor kept on the GPU. `capacity`
/// may exceed the tensor's element count (a KV cache grows into it).
pub struct DeviceBuffer {
    gpu: &'static Gpu,
    buf: wgpu::Buffer,
    capacity: usize,
    /// The stream whose recorded work last wrote this buffer.
    writer: Arc<Stream>,
    /// The values as last read back (at most `capacity`, so a plugin's host memory stays
    /// within what its quota already counts). Cleared when the buffer is written.
    host: std::sync::OnceLock<Vec<f32>>,
}

impl DeviceBuffer {
    /// Elements the buffer can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copy the first `len` values back to the host (submits pending work, then waits at
    /// most until the deadline).
    pub fn read(&self, len: usize, budget: Budget) -> Result<Vec<f32>> {
        if let Some(v) = self.host.get().filter(|v| v.len() >= len) {
            return Ok(v[..len].to_vec());
        }
        let words = self
            .gpu
            .read_words(&self.writer, &self.buf, 0, len, budget)?;
        let v: Vec<f32> = words.into_iter().map(f32::from_bits).collect();
        if len <= HOST_COPY_MAX {
            let _ = self.host.set(v.clone());
        }
        Ok(v)
    }

    fn new(
        gpu: &'static Gpu,
        buf: wgpu::Buffer,
        capacity: usize,
        writer: Arc<Stream>,
    ) -> DeviceBuffer {
        DeviceBuffer {
            gpu,
            buf,
            capacity,
            writer,
            host: std::sync::OnceLock::new(),
        }
    }
}

#[derive(Default)]
struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    dispatches: u32,
}

/// Recorded, not yet submitted work on which some device tensors depend. Dropping it
/// (when the last tensor written by it goes) discards what was never submitted.
#[derive(Default)]
pub struct Stream {
    pending: Mutex<Pending>,
}

pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pipelines: ops::Pipelines,
    /// Quantized weights uploaded once, keyed by (mapping address, start). Each entry
    /// holds a `Weak` to its mapping: that keeps the address from being reused by a new
    /// mapping (a reloaded file) while the entry exists, and tells when the mapping is
    /// gone, so the entry and its GPU memory can be dropped.
    resident: Mutex<ResidentWeights>,
    submissions: AtomicU64,
    errors: Arc<Mutex<Vec<String>>>,
}

fn gpu_err(msg: impl std::fmt::Display) -> TensorError {
    TensorError::Dtype(format!("gpu: {msg}"))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gpu {
    /// Open the first acceptable adapter, or say why none is.
    pub fn open(policy: AdapterPolicy) -> std::result::Result<Gpu, String> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = desc_backends();
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
                lock(&errors).push(e.to_string());
            }));
        }
        let pipelines = ops::Pipelines::build(&device);
        Ok(Gpu {
            device,
            queue,
            info,
            pipelines,
            resident: Mutex::new(HashMap::new()),
            submissions: AtomicU64::new(0),
            errors,
        })
    }

    pub fn name(&self) -> String {
        format!(
            "wgpu ({}, {:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// Command buffers submitted so far (a greedy decode step should add one).
    pub fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    /// The largest buffer one kernel may bind.
    fn binding_limit(&self) -> u64 {
        self.device.limits().max_storage_buffer_binding_size
    }

    /// Whether `bytes` fit one storage binding.
    fn fits(&self, bytes: usize) -> bool {
        (bytes as u64) <= self.binding_limit() && bytes <= u32::MAX as usize
    }

    fn take_error(&self) -> Result<()> {
        match lock(&self.errors).pop() {
            Some(e) => Err(gpu_err(e)),
            None => Ok(()),
        }
    }

    /// A new, zeroed device buffer of `capacity` f32 values, paid for from the call's
    /// budget first (device memory counts towards the plugin's quota like host memory).
    fn buffer(&self, capacity: usize, label: &str, budget: Budget) -> Result<wgpu::Buffer> {
        let bytes = crate::f32_bytes(capacity.max(1));
        budget.reserve(bytes)?;
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.unwrap_or(4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A device buffer holding `data` (uploaded now: creation is ordered before any
    /// later submission).
    fn upload(&self, data: &[u8], label: &str) -> wgpu::Buffer {
        // Buffers may not be empty and must be 4-byte multiples.
        let mut bytes = data.to_vec();
        bytes.resize(data.len().max(4).next_multiple_of(4), 0);
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
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

    /// Wrap a buffer written by `stream` as a device tensor.
    fn tensor(
        &'static self,
        stream: &Arc<Stream>,
        shape: Vec<usize>,
        buf: wgpu::Buffer,
        capacity: usize,
    ) -> Tensor {
        Tensor {
            shape,
            dtype: DType::F32,
            storage: Storage::Device(Arc::new(DeviceBuffer::new(
                self,
                buf,
                capacity,
                stream.clone(),
            ))),
        }
    }

    /// The stream a kernel over `operands` records into: that of an operand with work
    /// still recorded (the first such), after submitting the other operands' streams so
    /// their writes come first, or a new one. Preferring recorded work matters: a KV
    /// cache's stream was submitted at the last step's read, and joining it instead of
    /// the step's own would submit once per layer.
    fn stream_for(&self, operands: &[&Tensor]) -> Result<Arc<Stream>> {
        let mut streams: Vec<&Arc<Stream>> = Vec::new();
        for t in operands {
            if let Storage::Device(d) = &t.storage
                && std::ptr::eq(d.gpu, self)
                && !streams.iter().any(|s| Arc::ptr_eq(s, &d.writer))
            {
                streams.push(&d.writer);
            }
        }
        let busy = |s: &Arc<Stream>| lock(&s.pending).encoder.is_some();
        let chosen = streams.iter().position(|s| busy(s)).unwrap_or(0);
        for (i, s) in streams.iter().enumerate() {
            if i != chosen {
                self.submit(&mut lock(&s.pending))?;
            }
        }
        Ok(streams
            .get(chosen)
            .map(|s| Arc::clone(s))
            .unwrap_or_default())
    }

    /// Record one dispatch of `pipeline` with `buffers` bound in order.
    fn dispatch(
        &self,
        stream: &Stream,
        pipeline: &wgpu::ComputePipeline,
        buffers: &[&wgpu::Buffer],
        groups: (u32, u32, u32),
        budget: Budget,
    ) -> Result<()> {
        // No new GPU work once the call's budget is spent.
        budget.check()?;
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
        self.take_error()?;
        let mut pending = lock(&stream.pending);
        let encoder = self.encoder(&mut pending);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(groups.0, groups.1, groups.2);
        }
        pending.dispatches += 1;
        if pending.dispatches >= MAX_PENDING {
            self.submit(&mut pending)?;
        }
        Ok(())
    }

    /// Record a copy of `len` f32 values between device buffers.
    fn copy(
        &self,
        stream: &Stream,
        src: &wgpu::Buffer,
        src_at: usize,
        dst: &wgpu::Buffer,
        dst_at: usize,
        len: usize,
    ) {
        if len == 0 {
            return;
        }
        let mut pending = lock(&stream.pending);
        self.encoder(&mut pending).copy_buffer_to_buffer(
            src,
            (src_at * 4) as u64,
            dst,
            (dst_at * 4) as u64,
            (len * 4) as u64,
        );
    }

    fn encoder<'p>(&self, pending: &'p mut Pending) -> &'p mut wgpu::CommandEncoder {
        pending.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        })
    }

    /// Submit the recorded work (if any) and return its index.
    fn submit(&self, pending: &mut Pending) -> Result<Option<wgpu::SubmissionIndex>> {
        pending.dispatches = 0;
        let Some(encoder) = pending.encoder.take() else {
            return Ok(None);
        };
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let index = self.queue.submit([encoder.finish()]);
        self.submissions.fetch_add(1, Ordering::Relaxed);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(gpu_err(e));
        }
        Ok(Some(index))
    }

    /// Submit `stream` (which last wrote `buf`) and copy `len` 32-bit words from `buf`
    /// (starting at word `at`) back to the host, waiting at most until the deadline.
    fn read_words(
        &self,
        stream: &Stream,
        buf: &wgpu::Buffer,
        at: usize,
        len: usize,
        budget: Budget,
    ) -> Result<Vec<u32>> {
        budget.check()?;
        let size = (len.max(1) * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let index = {
            let mut pending = lock(&stream.pending);
            if len > 0 {
                self.encoder(&mut pending).copy_buffer_to_buffer(
                    buf,
                    (at * 4) as u64,
                    &staging,
                    0,
                    size,
                );
            }
            self.submit(&mut pending)?
        };
        if len == 0 {
            return Ok(Vec::new());
        }
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        // GPU work may not outlive the call's budget: wait at most until the deadline.
        let timeout = budget
            .deadline()
            .map(|t| t.saturating_duration_since(std::time::Instant::now()));
        match self.device.poll(wgpu::PollType::Wait {
            submission_index: index,
            timeout,
        }) {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => return Err(TensorError::Deadline),
            Err(e) => return Err(gpu_err(e)),
        }
        self.take_error()?;
        rx.recv().map_err(gpu_err)?.map_err(gpu_err)?;
        let data = slice.get_mapped_range().map_err(gpu_err)?;
        let out: Vec<u32> = data
            .chunks_exact(4)
            .take(len)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        drop(data);
        staging.unmap();
        Ok(out)
    }

    /// The device buffer of a mapped weight, uploaded on first use and kept.
    fn resident_weights(&self, b: &Tensor) -> Result<Arc<wgpu::Buffer>> {
        let Storage::Mapped { file, start, .. } = &b.storage else {
            return Err(TensorError::Dtype(
                "resident weights come from weights files".into(),
            ));
        };
        let key = (Arc::as_ptr(file) as usize, *start);
        let mut cache = lock(&self.resident);
        // A live entry is this mapping's (its `Weak` keeps the address from being reused).
        if let Some((weak, buf)) = cache.get(&key)
            && weak.strong_count() > 0
        {
            return Ok(buf.clone());
        }
        let bytes = b
            .bytes()
            .ok_or_else(|| TensorError::InvalidFile("mapping too short".into()))?;
        let buf = Arc::new(self.upload(bytes, "weights"));
        // Only on a miss (not on every kernel's lookup): mappings dropped since (an
        // unloaded plugin, a replaced file) free their buffers.
        cache.retain(|_, (weak, _)| weak.strong_count() > 0);
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
