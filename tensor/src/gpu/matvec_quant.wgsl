// Y[i, r] = dot(W[r], X[i]) for GGUF block-quantized W (rows of `k` values): kind 0 =
// Q4_0 (18-byte blocks of 32), 1 = Q4_1 (20 of 32), 2 = Q8_0 (34 of 32), 3 = Q4_K (144 of
// 256), 4 = Q6_K (210 of 256). The raw block bytes are read from a u32 array. One
// workgroup per output row; 64 threads split the row's 32-value (sub-)blocks and reduce
// in workgroup memory.
struct Params { n: u32, k: u32, m: u32, kind: u32, block_bytes: u32, per_block: u32, _p1: u32, _p2: u32 }

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

// Q4_K: the 6-bit scale and min of sub-block `j` (ggml's get_scale_min_k4), from the 12
// scale bytes at `sc`.
fn scale_min_k4(sc: u32, j: u32) -> vec2<f32> {
    if (j < 4u) {
        return vec2<f32>(f32(byte_at(sc + j) & 63u), f32(byte_at(sc + j + 4u) & 63u));
    }
    let s = (byte_at(sc + j + 4u) & 15u) | ((byte_at(sc + j - 4u) >> 6u) << 4u);
    let m = (byte_at(sc + j + 4u) >> 4u) | ((byte_at(sc + j) >> 6u) << 4u);
    return vec2<f32>(f32(s), f32(m));
}

// Σ value·x over 32-value sub-block `sub` (0..8) of the K-quant super-block at `base`.
fn k_subblock(base: u32, sub: u32, xo: u32) -> f32 {
    var sum = 0.0;
    if (p.kind == 3u) {
        let d = f16_at(base);
        let dmin = f16_at(base + 2u);
        let sm = scale_min_k4(base + 4u, sub);
        let qs = base + 16u + (sub / 2u) * 32u;
        let high = (sub & 1u) == 1u;
        for (var j = 0u; j < 32u; j++) {
            let b = byte_at(qs + j);
            let q = f32(select(b & 15u, b >> 4u, high));
            sum += (d * sm.x * q - dmin * sm.y) * x[xo + j];
        }
        return sum;
    }
    // Q6_K: halves of 128 values; within a half, part `k` of 32 takes its low 4 bits from
    // ql (low or high nibble) and its top 2 bits from qh (bits 2k, 2k+1); 16-value scales.
    let d = f16_at(base + 208u);
    let half = sub / 4u;
    let k = sub % 4u;
    let ql = base + half * 64u + select(0u, 32u, (k & 1u) == 1u);
    let qh = base + 128u + half * 32u;
    let sc = base + 192u + half * 8u + 2u * k;
    for (var l = 0u; l < 32u; l++) {
        let lb = byte_at(ql + l);
        let lo = select(lb & 15u, lb >> 4u, k >= 2u);
        let hi = (byte_at(qh + l) >> (2u * k)) & 3u;
        let q = f32(i32(lo | (hi << 4u)) - 32);
        let sb = i32(byte_at(sc + l / 16u));
        let s = f32(select(sb, sb - 256, sb >= 128));
        sum += d * s * q * x[xo + l];
    }
    return sum;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wid.x + wid.y * 65535u;
    if (r >= p.m) {
        return;
    }
    let subs = p.k / 32u;
    let per_block_subs = p.per_block / 32u;
    let row = r * (p.k / p.per_block) * p.block_bytes;
    for (var i = 0u; i < p.n; i++) {
        var sum = 0.0;
        for (var sb = lid.x; sb < subs; sb += 64u) {
            let base = row + (sb / per_block_subs) * p.block_bytes;
            let xo = i * p.k + sb * 32u;
            if (p.kind >= 3u) {
                sum += k_subblock(base, sb % per_block_subs, xo);
                continue;
            }
            let d = f16_at(base);
            var mn = 0.0;
            if (p.kind == 1u) {
                mn = f16_at(base + 2u);
            }
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
