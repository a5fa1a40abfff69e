// C[n, m] = A[n, k] · B, where B is [k, m] or (tb = 1) [m, k] used transposed.
// Register-tiled: each thread computes a 4×4 block of C, a workgroup of 8×8 threads a
// 32×32 tile; no workgroup memory (software rasterisers handle it poorly, and the 4×4
// reuse already cuts loads by 4×).
struct Params { n: u32, k: u32, m: u32, tb: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

fn bval(kk: u32, j: u32) -> f32 {
    if (p.tb == 1u) {
        return b[j * p.k + kk];
    }
    return b[kk * p.m + j];
}

@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let col0 = gid.x * 4u;
    let row0 = gid.y * 4u;
    if (row0 >= p.n || col0 >= p.m) {
        return;
    }
    var acc: array<array<f32, 4>, 4>;
    for (var kk = 0u; kk < p.k; kk++) {
        var av: array<f32, 4>;
        var bv: array<f32, 4>;
        for (var i = 0u; i < 4u; i++) {
            let r = min(row0 + i, p.n - 1u);
            av[i] = a[r * p.k + kk];
            let j = min(col0 + i, p.m - 1u);
            bv[i] = bval(kk, j);
        }
        for (var i = 0u; i < 4u; i++) {
            for (var j = 0u; j < 4u; j++) {
                acc[i][j] = fma(av[i], bv[j], acc[i][j]);
            }
        }
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            let r = row0 + i;
            let cc = col0 + j;
            if (r < p.n && cc < p.m) {
                c[r * p.m + cc] = acc[i][j];
            }
        }
    }
}
