// The index of the largest of x[at .. at + len] (the first one on ties, as on the CPU),
// written to o[0]. One workgroup of 256 threads.
struct Params { at: u32, len: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<u32>;

const NONE: u32 = 0xffffffffu;
var<workgroup> best_v: array<f32, 256>;
var<workgroup> best_i: array<u32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(local_invocation_id) lid: vec3<u32>) {
    let tid = lid.x;
    var bi = NONE;
    var bv = 0.0;
    for (var i = tid; i < p.len; i += 256u) {
        let v = x[p.at + i];
        if (bi == NONE || v > bv) {
            bv = v;
            bi = i;
        }
    }
    best_v[tid] = bv;
    best_i[tid] = bi;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (tid < s) {
            let oi = best_i[tid + s];
            let ov = best_v[tid + s];
            let mi = best_i[tid];
            let mv = best_v[tid];
            if (oi != NONE && (mi == NONE || ov > mv || (ov == mv && oi < mi))) {
                best_v[tid] = ov;
                best_i[tid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        o[0] = best_i[0];
    }
}
