//! Probe: is a matmul whose B operand is a uniform buffer faster on this adapter than one
//! reading B from a storage buffer? (Mesa 22.3's lavapipe loads storage buffers one lane at a
//! time; a uniform buffer is read with a gather, or with one load for all lanes when the address
//! is the same for the whole workgroup.) `cargo run --release --example ubo_probe`.

use maskaq::gpu::{Gpu, GpuOptions};
use wgpu::util::DeviceExt;

const SRC: &str = r#"
struct P { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var<BSPACE> b4: array<vec4<f32>, 4096>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let col0 = (wid.x * 8u + (lid % 8u)) * 4u;
    let row0 = (wid.y * 8u + (lid / 8u)) * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    var ar: array<u32, 4>;
    var bc: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        ar[i] = (min(row0 + i, p.m - 1u) * p.k) / 4u;
        bc[i] = (min(col0 + i, p.n - 1u) * p.k) / 4u;
    }
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }
    for (var k4 = 0u; k4 < p.k / 4u; k4++) {
        let a0 = a4[ar[0] + k4]; let a1 = a4[ar[1] + k4]; let a2 = a4[ar[2] + k4]; let a3 = a4[ar[3] + k4];
        let b0 = b4[bc[0] + k4]; let b1 = b4[bc[1] + k4]; let b2 = b4[bc[2] + k4]; let b3 = b4[bc[3] + k4];
        acc[0] += dot(a0, b0); acc[1] += dot(a0, b1); acc[2] += dot(a0, b2); acc[3] += dot(a0, b3);
        acc[4] += dot(a1, b0); acc[5] += dot(a1, b1); acc[6] += dot(a1, b2); acc[7] += dot(a1, b3);
        acc[8] += dot(a2, b0); acc[9] += dot(a2, b1); acc[10] += dot(a2, b2); acc[11] += dot(a2, b3);
        acc[12] += dot(a3, b0); acc[13] += dot(a3, b1); acc[14] += dot(a3, b2); acc[15] += dot(a3, b3);
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            if (row0 + i < p.m && col0 + j < p.n) { c[(row0 + i) * p.n + col0 + j] = acc[i * 4u + j]; }
        }
    }
}
"#;

/// SRC with B in a uniform buffer and the 8 lanes of a workgroup on different rows sharing its
/// 4 columns, so every load of B has one address for the whole workgroup (no early return: it
/// would make the address depend on the lane's activity).
fn uniform_index_source() -> String {
    SRC.replace("BSPACE", "uniform")
        .replace("@workgroup_size(64)", "@workgroup_size(8)")
        .replace("let col0 = (wid.x * 8u + (lid % 8u)) * 4u;", "let col0 = wid.x * 4u;")
        .replace("let row0 = (wid.y * 8u + (lid / 8u)) * 4u;", "let row0 = (wid.y * 8u + lid) * 4u;")
        .replace("if (row0 >= p.m || col0 >= p.n) { return; }", "")
}

/// kind 0: B in a storage buffer; 1: B in a uniform buffer; 2: the same, indexed uniformly.
fn run(gpu: &Gpu, kind: u32, m: u32, n: u32, k: u32, reps: usize) -> (f64, Vec<f32>) {
    let d = &gpu.device;
    let uniform = kind > 0;
    let src = match kind {
        0 => SRC.replace("BSPACE", "storage, read"),
        1 => SRC.replace("BSPACE", "uniform"),
        _ => uniform_index_source(),
    };
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    let pipe = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let b: Vec<f32> = (0..16384).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
    let st = wgpu::BufferUsages::STORAGE;
    let mk = |data: &[u8], usage| {
        d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: data, usage })
    };
    let pbuf = mk(bytemuck::cast_slice(&[m, n, k, 0u32]), wgpu::BufferUsages::UNIFORM);
    let abuf = mk(bytemuck::cast_slice(&a), st);
    let bbuf = mk(bytemuck::cast_slice(&b), if uniform { wgpu::BufferUsages::UNIFORM } else { st });
    let cbuf = d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (m * n * 4) as u64,
        usage: st | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipe.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry { binding: 0, resource: pbuf.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 1, resource: abuf.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 2, resource: cbuf.as_entire_binding() },
            wgpu::BindGroupEntry { binding: 3, resource: bbuf.as_entire_binding() },
        ],
    });
    let mut times = Vec::new();
    for _ in 0..reps {
        let t = std::time::Instant::now();
        let mut enc = d.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipe);
            pass.set_bind_group(0, &bg, &[]);
            if kind == 2 {
                pass.dispatch_workgroups(n.div_ceil(4), m.div_ceil(32), 1);
            } else {
                pass.dispatch_workgroups(n.div_ceil(32), m.div_ceil(32), 1);
            }
        }
        gpu.queue.submit([enc.finish()]);
        gpu.wait().unwrap();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let out = maskaq::gpu::Tensor { buf: std::sync::Arc::new(cbuf), shape: vec![(m * n) as usize] };
    (times[times.len() / 2], out.read(gpu).unwrap())
}

fn main() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    println!("{}", gpu.describe());
    for (m, n, k) in [(800u32, 192u32, 64u32), (800, 128, 64), (800, 64, 128), (3152, 192, 64)] {
        for _ in 0..2 {
            let (ts, cs) = run(&gpu, 0, m, n, k, 9);
            let (tu, cu) = run(&gpu, 1, m, n, k, 9);
            let (ti, ci) = run(&gpu, 2, m, n, k, 9);
            assert!(cs == cu && cs == ci, "same result");
            println!(
                "{m}x{n}x{k}: storage B {:.3} ms; uniform B {:.3} ms ({:.2}x); uniform B, one address per workgroup {:.3} ms ({:.2}x)",
                ts * 1e3,
                tu * 1e3,
                ts / tu,
                ti * 1e3,
                ts / ti
            );
        }
    }
}
