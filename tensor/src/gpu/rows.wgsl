// Row-wise kernels, one workgroup of 128 threads per row of `cols` values:
// softmax (0), RMS norm times `w` (1), layer norm times `w` plus `b` (2) or without a
// bias (3). Reductions go through workgroup memory.
struct Params { rows: u32, cols: u32, op: u32, eps: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;

const WG: u32 = 128u;
var<workgroup> red: array<f32, 128>;

fn reduce_sum(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

fn reduce_max(tid: u32, v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] = max(red[tid], red[tid + s]);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(128)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
) {
    let row = wid.x + wid.y * nw.x;
    if (row >= p.rows) {
        return;
    }
    let tid = lid.x;
    let off = row * p.cols;
    let n = f32(p.cols);
    if (p.op == 0u) {
        var m = -3.0e38;
        for (var c = tid; c < p.cols; c += WG) {
            m = max(m, x[off + c]);
        }
        m = reduce_max(tid, m);
        var s = 0.0;
        for (var c = tid; c < p.cols; c += WG) {
            s += exp(x[off + c] - m);
        }
        s = reduce_sum(tid, s);
        for (var c = tid; c < p.cols; c += WG) {
            o[off + c] = exp(x[off + c] - m) / s;
        }
    } else if (p.op == 1u) {
        var ss = 0.0;
        for (var c = tid; c < p.cols; c += WG) {
            ss += x[off + c] * x[off + c];
        }
        ss = reduce_sum(tid, ss);
        let inv = 1.0 / sqrt(ss / n + p.eps);
        for (var c = tid; c < p.cols; c += WG) {
            o[off + c] = x[off + c] * (inv * w[c]);
        }
    } else {
        var s = 0.0;
        for (var c = tid; c < p.cols; c += WG) {
            s += x[off + c];
        }
        let mean = reduce_sum(tid, s) / n;
        var v = 0.0;
        for (var c = tid; c < p.cols; c += WG) {
            let d = x[off + c] - mean;
            v += d * d;
        }
        let inv = 1.0 / sqrt(reduce_sum(tid, v) / n + p.eps);
        for (var c = tid; c < p.cols; c += WG) {
            var y = (x[off + c] - mean) * inv * w[c];
            if (p.op == 2u) {
                y += b[c];
            }
            o[off + c] = y;
        }
    }
}
