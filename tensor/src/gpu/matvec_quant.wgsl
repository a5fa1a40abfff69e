// Y[i, r] = dot(W[r], X[i]) for GGUF block-quantized W (rows of `k` values in 32-value
// blocks): kind 0 = Q4_0 (18-byte blocks), 1 = Q4_1 (20), 2 = Q8_0 (34). The raw block
// bytes are read from a u32 array. One workgroup per output row; 64 threads split the
// row's blocks and reduce in workgroup memory.
struct Params { n: u32, k: u32, m: u32, kind: u32, block_bytes: u32, _p0: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, 64>;

fn byte_at(off: u32) -> u32 {
    return (w[off >> 2u] >> ((off & 3u) * 8u)) & 0xffu;
}

fn f16_at(off: u32) -> f32 {
    return unpack2x16float(byte_at(off) | (byte_at(off + 1u) << 8u)).x;
}

fn value(base: u32, j: u32, d: f32, mn: f32) -> f32 {
    if (p.kind == 2u) {
        let v = i32(byte_at(base + 2u + j));
        return d * f32(select(v, v - 256, v >= 128));
    }
    let off = select(2u, 4u, p.kind == 1u);
    let qb = byte_at(base + off + (j & 15u));
    let q = f32(select(qb & 15u, qb >> 4u, j >= 16u));
    if (p.kind == 1u) {
        return d * q + mn;
    }
    return d * (q - 8.0);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wid.x + wid.y * 65535u;
    if (r >= p.m) {
        return;
    }
    let blocks = p.k / 32u;
    let row = r * blocks * p.block_bytes;
    for (var i = 0u; i < p.n; i++) {
        var sum = 0.0;
        for (var blk = lid.x; blk < blocks; blk += 64u) {
            let base = row + blk * p.block_bytes;
            let d = f16_at(base);
            var mn = 0.0;
            if (p.kind == 1u) {
                mn = f16_at(base + 2u);
            }
            let xo = i * p.k + blk * 32u;
            for (var j = 0u; j < 32u; j++) {
                sum += value(base, j, d, mn) * x[xo + j];
            }
        }
        partial[lid.x] = sum;
        workgroupBarrier();
        for (var s = 32u; s > 0u; s >>= 1u) {
            if (lid.x < s) {
                partial[lid.x] += partial[lid.x + s];
            }
            workgroupBarrier();
        }
        if (lid.x == 0u) {
            y[i * p.m + r] = partial[0];
        }
        workgroupBarrier();
    }
}
