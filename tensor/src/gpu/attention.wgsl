// Causal attention with grouped-query heads. q is [n, heads·d]; the caches k and v are
// [t, kv_heads·d]; query row i sits at position pos + i and sees keys first..=pos + i
// (first > 0 with a sliding window). One workgroup of 64 threads per (row, head):
// scores go to a scratch area after the output (`o` holds [n, heads·d] then
// [n·heads, t] scores), then max, exp and sum are reduced in workgroup memory, then
// threads split the head's d outputs. Head width at most 256.
struct Params { n: u32, t: u32, heads: u32, group: u32, d: u32, pos: u32, window: u32, scale: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> o: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, 64>;
var<workgroup> qh: array<f32, 256>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
) {
    let job = wid.x + wid.y * nw.x;
    if (job >= p.n * p.heads) {
        return;
    }
    let tid = lid.x;
    let i = job / p.heads;
    let h = job % p.heads;
    let qcols = p.heads * p.d;
    let kcols = (p.heads / p.group) * p.d;
    let kv = (h / p.group) * p.d;
    let last = p.pos + i;
    var first = 0u;
    if (p.window > 0u && last + 1u > p.window) {
        first = last + 1u - p.window;
    }
    let scratch = p.n * qcols + job * p.t;
    for (var c = tid; c < p.d; c += WG) {
        qh[c] = q[i * qcols + h * p.d + c];
    }
    workgroupBarrier();

    var m = -3.0e38;
    for (var s = first + tid; s <= last; s += WG) {
        var acc = 0.0;
        for (var c = 0u; c < p.d; c++) {
            acc = fma(qh[c], k[s * kcols + kv + c], acc);
        }
        let score = acc * p.scale;
        o[scratch + s] = score;
        m = max(m, score);
    }
    red[tid] = m;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
        if (tid < st) {
            red[tid] = max(red[tid], red[tid + st]);
        }
        workgroupBarrier();
    }
    m = red[0];
    workgroupBarrier();

    var l = 0.0;
    for (var s = first + tid; s <= last; s += WG) {
        let e = exp(o[scratch + s] - m);
        o[scratch + s] = e;
        l += e;
    }
    red[tid] = l;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st >>= 1u) {
        if (tid < st) {
            red[tid] += red[tid + st];
        }
        workgroupBarrier();
    }
    let total = red[0];
    // The weights written above by other threads of this workgroup.
    storageBarrier();

    for (var c = tid; c < p.d; c += WG) {
        var acc = 0.0;
        for (var s = first; s <= last; s++) {
            acc = fma(o[scratch + s], v[s * kcols + kv + c], acc);
        }
        o[i * qcols + h * p.d + c] = acc / total;
    }
}
