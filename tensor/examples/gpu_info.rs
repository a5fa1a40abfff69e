//! Which wgpu adapter the backend would use: `cargo run --release -p apiary-tensor --features wgpu --example gpu_info`.
fn main() {
    #[cfg(feature = "wgpu")]
    for policy in [
        apiary_tensor::gpu::AdapterPolicy::HardwareOnly,
        apiary_tensor::gpu::AdapterPolicy::AllowSoftware,
    ] {
        match apiary_tensor::gpu::Gpu::open(policy) {
            Ok(g) => println!("{policy:?}: {}", g.name()),
            Err(e) => println!("{policy:?}: {e}"),
        }
    }
}
