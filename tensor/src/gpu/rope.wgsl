// Rotary position embedding on [rows, cols] (heads of `head_dim`), row r at position
// pos + r. One thread per rotated pair: (j, j + head_dim/2) when `neox`, else (2j, 2j+1).
struct Params { rows: u32, cols: u32, head_dim: u32, pos: u32, base: f32, neox: u32, _a: u32, _b: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
) {
    let idx = (wid.x + wid.y * nw.x) * 256u + lid.x;
    let half = p.head_dim / 2u;
    let per_row = p.cols / 2u;
    if (idx >= p.rows * per_row) {
        return;
    }
    let r = idx / per_row;
    let rem = idx % per_row;
    let j = rem % half;
    let head = r * p.cols + (rem / half) * p.head_dim;
    var i0 = head + 2u * j;
    var i1 = i0 + 1u;
    if (p.neox == 1u) {
        i0 = head + j;
        i1 = i0 + half;
    }
    let inv_freq = pow(p.base, -f32(2u * j) / f32(p.head_dim));
    let theta = f32(p.pos + r) * inv_freq;
    let s = sin(theta);
    let c = cos(theta);
    let a = x[i0];
    let b = x[i1];
    o[i0] = a * c - b * s;
    o[i1] = a * s + b * c;
}
