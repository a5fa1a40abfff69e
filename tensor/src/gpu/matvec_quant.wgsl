// Y[i, r] = dot(W[r], X[i]) for GGUF block-quantized W (rows of `k` values): kind 0 =
// Q4_0 (18-byte blocks of 32), 1 = Q4_1 (20 of 32), 2 = Q8_0 (34 of 32), 3 = Q4_K (144 of
// 256), 4 = Q6_K (210 of 256). The raw block bytes are read from a u32 array. One
// workgroup per output row; 64 threads split the row's 32-value (sub-)blocks, decode each
// once per pass of up to 8 rows of X, and reduce in workgroup memory.
struct Params { n: u32, k: u32, m: u32, kind: u32, block_bytes: u32, per_block: u32, _p1: u32, _p2: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

var<workgroup> partial: array<f32, 512>;

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

// What the 32 values of sub-block `sub` of the block at `base` share (for 32-value
// formats the block itself, sub = 0): scale `a`, offset `b` and where the bits are.
struct Sub { base: u32, a: f32, b: f32, qs: u32, qh: u32, sc: u32, k: u32 }

fn sub_block(base: u32, sub: u32) -> Sub {
    var s = Sub(base, 0.0, 0.0, 0u, 0u, 0u, 0u);
    if (p.kind < 3u) {
        s.a = f16_at(base);
        if (p.kind == 1u) {
            s.b = f16_at(base + 2u);
        }
    } else if (p.kind == 3u) {
        let sm = scale_min_k4(base + 4u, sub);
        s.a = f16_at(base) * sm.x;
        s.b = f16_at(base + 2u) * sm.y;
        s.qs = base + 16u + (sub / 2u) * 32u;
        s.k = sub & 1u;
    } else {
        // Q6_K: halves of 128 values; within a half, part `k` of 32 takes its low 4 bits
        // from ql (low or high nibble) and its top 2 bits from qh (bits 2k, 2k+1);
        // 16-value scales.
        let half = sub / 4u;
        s.k = sub % 4u;
        s.a = f16_at(base + 208u);
        s.qs = base + half * 64u + select(0u, 32u, (s.k & 1u) == 1u);
        s.qh = base + 128u + half * 32u;
        s.sc = base + 192u + half * 8u + 2u * s.k;
    }
    return s;
}

// Value `j` (0..32) of a sub-block, dequantized.
fn weight(s: Sub, j: u32) -> f32 {
    if (p.kind < 3u) {
        return value(s.base, j, s.a, s.b);
    }
    if (p.kind == 3u) {
        let b = byte_at(s.qs + j);
        return s.a * f32(select(b & 15u, b >> 4u, s.k == 1u)) - s.b;
    }
    let lb = byte_at(s.qs + j);
    let lo = select(lb & 15u, lb >> 4u, s.k >= 2u);
    let hi = (byte_at(s.qh + j) >> (2u * s.k)) & 3u;
    let sb = i32(byte_at(s.sc + j / 16u));
    return s.a * f32(select(sb, sb - 256, sb >= 128)) * f32(i32(lo | (hi << 4u)) - 32);
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
    if (p.n == 1u) {
        // Decoding: one row of X, a plain dot product.
        var acc = 0.0;
        for (var sb = lid.x; sb < subs; sb += 64u) {
            let sub = sub_block(row + (sb / per_block_subs) * p.block_bytes, sb % per_block_subs);
            let xb = sb * 32u;
            for (var j = 0u; j < 32u; j++) {
                acc = fma(weight(sub, j), x[xb + j], acc);
            }
        }
        partial[lid.x] = acc;
        workgroupBarrier();
        for (var s = 32u; s > 0u; s >>= 1u) {
            if (lid.x < s) {
                partial[lid.x] += partial[lid.x + s];
            }
            workgroupBarrier();
        }
        if (lid.x == 0u) {
            y[r] = partial[0];
        }
        return;
    }
    // Up to 8 rows of X per pass, so each weight is decoded once per pass rather than
    // once per row (a prompt's rows share every weight); past the last row the offsets
    // repeat it and those sums are dropped. Accumulators are vectors, not an indexed
    // array, so they stay in registers.
    for (var i0 = 0u; i0 < p.n; i0 += 8u) {
        let rows = min(8u, p.n - i0);
        let last = p.n - 1u;
        let o0 = vec4<u32>(i0, min(i0 + 1u, last), min(i0 + 2u, last), min(i0 + 3u, last)) * p.k;
        let o1 = vec4<u32>(min(i0 + 4u, last), min(i0 + 5u, last), min(i0 + 6u, last), min(i0 + 7u, last)) * p.k;
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        for (var sb = lid.x; sb < subs; sb += 64u) {
            let sub = sub_block(row + (sb / per_block_subs) * p.block_bytes, sb % per_block_subs);
            let xb = sb * 32u;
            for (var j = 0u; j < 32u; j++) {
                let wj = weight(sub, j);
                let o = xb + j;
                s0 = fma(vec4<f32>(wj), vec4<f32>(x[o0.x + o], x[o0.y + o], x[o0.z + o], x[o0.w + o]), s0);
                if (rows > 4u) {
                    s1 = fma(vec4<f32>(wj), vec4<f32>(x[o1.x + o], x[o1.y + o], x[o1.z + o], x[o1.w + o]), s1);
                }
            }
        }
        partial[lid.x] = s0.x;
        partial[64u + lid.x] = s0.y;
        partial[128u + lid.x] = s0.z;
        partial[192u + lid.x] = s0.w;
        partial[256u + lid.x] = s1.x;
        partial[320u + lid.x] = s1.y;
        partial[384u + lid.x] = s1.z;
        partial[448u + lid.x] = s1.w;
        workgroupBarrier();
        for (var s = 32u; s > 0u; s >>= 1u) {
            if (lid.x < s) {
                for (var i = 0u; i < 8u; i++) {
                    partial[i * 64u + lid.x] += partial[i * 64u + lid.x + s];
                }
            }
            workgroupBarrier();
        }
        if (lid.x < rows) {
            y[(i0 + lid.x) * p.m + r] = partial[lid.x * 64u];
        }
        workgroupBarrier();
    }
}
