// o[i] = f(a[i], b[i mod bn]): add (0), mul (1); and unary ops that ignore b: scale by
// `s` (2), SiLU (3), tanh-approximated GELU (4). One thread per element; the grid may be
// two-dimensional (more than 65,535 workgroups).
struct Params { n: u32, bn: u32, op: u32, s: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> o: array<f32>;

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nw: vec3<u32>,
) {
    let i = (wid.x + wid.y * nw.x) * 256u + lid.x;
    if (i >= p.n) {
        return;
    }
    let x = a[i];
    var y = x;
    switch p.op {
        case 0u: { y = x + b[i % p.bn]; }
        case 1u: { y = x * b[i % p.bn]; }
        case 2u: { y = x * p.s; }
        case 3u: { y = x / (1.0 + exp(-x)); }
        case 4u: {
            // tanh through exp, clamped so neither overflows (tanh(±10) is ±1 in f32).
            let u = clamp(0.7978846 * (x + 0.044715 * x * x * x), -10.0, 10.0);
            let e = exp(2.0 * u);
            y = 0.5 * x * (1.0 + (e - 1.0) / (e + 1.0));
        }
        default: {}
    }
    o[i] = y;
}
