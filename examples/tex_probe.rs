//! Probe: matmul C = A Bᵀ (both contiguous along k) with RB x CB outputs per invocation, reading
//! A and B through rgba32float textures or (4 x 4, for comparison) storage buffers, and the cost
//! of copying the buffers into the textures. Mesa's llvmpipe runs a storage load once per SIMD
//! lane, a texel fetch as one gather (docs/ARCHITECTURE.md, "Texture operands").
//! `cargo run --release --example tex_probe`.
use maskaq::gpu::{Gpu, GpuOptions};
use wgpu::util::DeviceExt;

/// The kernel; `storage`: A and B as storage buffers of vec4 instead of textures.
fn source(rb: usize, cb: usize, storage: bool) -> String {
    let s = texture_source(rb, cb);
    if !storage {
        return s;
    }
    let mut s = s
        .replace("var ta: texture_2d<f32>", "var<storage, read> ta: array<vec4<f32>>")
        .replace("var tb: texture_2d<f32>", "var<storage, read> tb: array<vec4<f32>>");
    for (t, name) in [("ta", "ar"), ("tb", "bc")] {
        for i in 0..rb.max(cb) {
            s = s.replace(
                &format!("textureLoad({t}, vec2(k4, {name}{i}), 0)"),
                &format!("{t}[{name}{i} * i32(p.k / 4u) + k4]"),
            );
        }
    }
    s
}

fn texture_source(rb: usize, cb: usize) -> String {
    let mut s = String::from(
        "struct P { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var ta: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@group(0) @binding(3) var tb: texture_2d<f32>;
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {\n",
    );
    s += &format!(
        "    let col0 = (wid.x * 8u + (lid % 8u)) * {cb}u; let row0 = (wid.y * 8u + (lid / 8u)) * {rb}u;\n"
    );
    for i in 0..rb {
        s += &format!("    let ar{i} = i32(min(row0 + {i}u, p.m - 1u));\n");
        for j in 0..cb {
            s += &format!("    var acc{i}_{j} = 0.0;\n");
        }
    }
    for j in 0..cb {
        s += &format!("    let bc{j} = i32(min(col0 + {j}u, p.n - 1u));\n");
    }
    s += "    for (var k4 = 0i; k4 < i32(p.k / 4u); k4++) {\n";
    for i in 0..rb {
        s += &format!("        let a{i} = textureLoad(ta, vec2(k4, ar{i}), 0);\n");
    }
    for j in 0..cb {
        s += &format!("        let b{j} = textureLoad(tb, vec2(k4, bc{j}), 0);\n");
    }
    for i in 0..rb {
        for j in 0..cb {
            s += &format!("        acc{i}_{j} += dot(a{i}, b{j});\n");
        }
    }
    s += "    }\n";
    for i in 0..rb {
        for j in 0..cb {
            s += &format!(
                "    if (row0 + {i}u < p.m && col0 + {j}u < p.n) {{ c[(row0 + {i}u) * p.n + col0 + {j}u] = acc{i}_{j}; }}\n"
            );
        }
    }
    s + "}\n"
}

fn main() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    let d = &gpu.device;
    println!("{}", gpu.describe());
    for (m, n, k) in [(800u32, 192u32, 64u32), (800, 128, 64), (800, 64, 128)] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
        let b: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 1000) as f32 / 1000.0 - 0.5).collect();
        let mut want = vec![0f32; (m * n) as usize];
        for r in 0..m as usize {
            for c in 0..n as usize {
                let mut acc = 0f32;
                for k4 in 0..(k / 4) as usize {
                    let mut dp = 0f32;
                    for t in 0..4 {
                        dp += a[r * k as usize + k4 * 4 + t] * b[c * k as usize + k4 * 4 + t];
                    }
                    acc += dp;
                }
                want[r * n as usize + c] = acc;
            }
        }
        let st = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let mk = |data: &[u8], usage| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: None, contents: data, usage })
        };
        let pbuf = mk(bytemuck::cast_slice(&[m, n, k, 0u32]), wgpu::BufferUsages::UNIFORM);
        let abuf = mk(bytemuck::cast_slice(&a), st);
        let bbuf = mk(bytemuck::cast_slice(&b), st);
        let tex = |rows: u32| {
            d.create_texture(&wgpu::TextureDescriptor {
                label: None,
                size: wgpu::Extent3d { width: k / 4, height: rows, depth_or_array_layers: 1 },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format: wgpu::TextureFormat::Rgba32Float,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        };
        let (ta, tb) = (tex(m), tex(n));
        let (tav, tbv) = (ta.create_view(&Default::default()), tb.create_view(&Default::default()));
        let cbuf = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (m * n * 4) as u64,
            usage: st,
            mapped_at_creation: false,
        });
        let copy = |enc: &mut wgpu::CommandEncoder, buf: &wgpu::Buffer, t: &wgpu::Texture, rows: u32| {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: buf,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: 0,
                        bytes_per_row: Some(k * 4),
                        rows_per_image: None,
                    },
                },
                t.as_image_copy(),
                wgpu::Extent3d { width: k / 4, height: rows, depth_or_array_layers: 1 },
            );
        };
        fn sbuf(buf: &wgpu::Buffer) -> wgpu::BindingResource<'_> {
            buf.as_entire_binding()
        }
        for (rb, cb, storage) in
            [(4usize, 4usize, true), (4, 4, false), (8, 4, false), (4, 8, false), (2, 8, false)]
        {
            let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(source(rb, cb, storage).into()),
            });
            let pipe = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let bg = d.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipe.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: pbuf.as_entire_binding() },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: if storage {
                            sbuf(&abuf)
                        } else {
                            wgpu::BindingResource::TextureView(&tav)
                        },
                    },
                    wgpu::BindGroupEntry { binding: 2, resource: cbuf.as_entire_binding() },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: if storage {
                            sbuf(&bbuf)
                        } else {
                            wgpu::BindingResource::TextureView(&tbv)
                        },
                    },
                ],
            });
            let mut times = [Vec::new(), Vec::new()];
            for rep in 0..18 {
                let with_mm = rep % 2 == 0;
                let t = std::time::Instant::now();
                let mut enc = d.create_command_encoder(&Default::default());
                copy(&mut enc, &abuf, &ta, m);
                copy(&mut enc, &bbuf, &tb, n);
                if with_mm {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipe);
                    pass.set_bind_group(0, &bg, &[]);
                    pass.dispatch_workgroups(n.div_ceil(8 * cb as u32), m.div_ceil(8 * rb as u32), 1);
                }
                gpu.queue.submit([enc.finish()]);
                gpu.wait().unwrap();
                times[rep % 2].push(t.elapsed().as_secs_f64());
            }
            for t in &mut times {
                t.sort_by(f64::total_cmp);
            }
            let (tm, tc) = (times[0][4], times[1][4]);
            let out =
                maskaq::gpu::Tensor { buf: std::sync::Arc::new(cbuf.clone()), shape: vec![(m * n) as usize] };
            let got = out.read(&gpu).unwrap();
            let same = got == want;
            let gf = 2.0 * (m * n * k) as f64 / (tm - tc) / 1e9;
            let what = if storage { "storage" } else { "texture" };
            println!(
                "{m}x{n}x{k} {rb}x{cb} {what}: copies+matmul {:.3} ms, copies {:.3} ms, matmul {gf:.2} GF/s, same as CPU {same}",
                tm * 1e3,
                tc * 1e3
            );
        }
    }
}
