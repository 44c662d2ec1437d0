use std::sync::Arc;

use wgpu::util::DeviceExt;

use super::{Gpu, Tensor, TexMirror};

/// A WGSL entry point and the shape of its bindings.
///
/// Binding 0 is always the kernel's uniform parameter block (a struct of u32/f32 scalars);
/// `storage` lists the storage buffers the entry point uses as (binding, read_write). Entry
/// points of one shader file share the file's declarations, each using a subset of them.
#[derive(Clone, Copy)]
pub struct Kernel {
    /// Unique name; also the pipeline-cache key.
    pub id: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
    /// (binding number, read_write) of each storage buffer, in the order buffers are passed.
    pub storage: &'static [(u32, bool)],
    /// Threads per workgroup along x (must match the shader's `@workgroup_size`).
    pub workgroup: u32,
    /// Values of the shader's `override` constants (tile sizes, say): one entry point built
    /// with different constants is a different variant and a different pipeline.
    pub constants: &'static [(&'static str, f64)],
    /// Bindings of the `texture_2d<f32>` operands (read through [`TexMirror`]s), in the order
    /// the launch passes its mirrors.
    pub textures: &'static [u32],
}

/// What the pipeline cache tells kernels apart by: the source, the entry point and the values
/// of its `override` constants (not the id, which is only a name).
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct PipelineKey {
    source: usize,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
}

impl Kernel {
    pub(crate) fn pipeline_key(&self) -> PipelineKey {
        PipelineKey {
            source: self.source.as_ptr() as usize,
            entry: self.entry,
            constants: self.constants.iter().map(|&(n, v)| (n, v.to_bits())).collect(),
        }
    }
}

/// A launch the tuner can rebuild with another variant: `maskaq bench --kernels` and `maskaq
/// tune` collect these from a model's graphs (docs/ARCHITECTURE.md, "Kernel variants").
pub trait Tunable: Send + Sync {
    /// The op, e.g. "matmul".
    fn op(&self) -> &'static str;
    /// The shape key the tuning cache stores a pick under.
    fn key(&self) -> String;
    /// Floating-point operations and bytes moved by one launch (for GFLOP/s and GB/s).
    fn flops(&self) -> f64;
    fn bytes(&self) -> f64;
    /// The variants that compute this launch on `gpu`, the reference first.
    fn variants(&self, gpu: &Gpu) -> Vec<&'static Kernel>;
    /// The same launch with `kernel` on fresh inputs drawn from `seed` (equal across variants),
    /// and the tensor it writes.
    fn standalone(&self, gpu: &Gpu, kernel: &'static Kernel, seed: u64) -> (Vec<Dispatch>, Tensor);
}

pub(crate) struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

impl Pipeline {
    pub(crate) fn build(device: &wgpu::Device, k: &Kernel, div_error_ulp: i32) -> Pipeline {
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        }];
        for &(binding, rw) in k.storage {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: !rw },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        for &binding in k.textures {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Float { filterable: false },
                    view_dimension: wgpu::TextureViewDimension::D2,
                    multisampled: false,
                },
                count: None,
            });
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(k.id),
            entries: &entries,
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(k.id),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(k.id),
            source: wgpu::ShaderSource::Wgsl(k.source.into()),
        });
        let mut constants: Vec<(&str, f64)> = k.constants.to_vec();
        if div_error_ulp != 0 && k.source.contains("override div_error_ulp") {
            constants.push(("div_error_ulp", div_error_ulp as f64));
        }
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(k.id),
            layout: Some(&pl),
            module: &module,
            entry_point: Some(k.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        Pipeline { pipeline, layout }
    }
}

/// A bound kernel launch, built once and recorded as often as needed.
#[derive(Clone)]
pub struct Dispatch {
    /// The kernel's id (for profiles).
    pub kernel: &'static str,
    /// For launches the tuner may retarget (matmuls): what the launch computes.
    pub tunable: Option<Arc<dyn Tunable>>,
    pipeline: Arc<Pipeline>,
    bind_group: wgpu::BindGroup,
    grid: [u32; 3],
    /// Keeps the parameter buffer alive with the bind group.
    _params: wgpu::Buffer,
    /// The bound storage buffers: holding them tells the buffer pool they are still in use, so
    /// a buffer is never handed out again while a launch that binds it exists.
    bound: Vec<Arc<wgpu::Buffer>>,
    /// Texture mirrors the launch reads: their copies are recorded right before it, outside
    /// the compute pass (`Gpu::encode` splits passes there).
    pub(crate) mirrors: Vec<Arc<TexMirror>>,
}

impl Dispatch {
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.grid[0], self.grid[1], self.grid[2]);
    }

    /// Every storage buffer the launch binds, in binding order, then the buffers its texture
    /// mirrors copy from: all it may read or write (`compare --kernels` replays launches on
    /// them).
    pub fn buffers(&self) -> Vec<Arc<wgpu::Buffer>> {
        let mut out = self.bound.clone();
        for m in &self.mirrors {
            if !out.iter().any(|b| Arc::ptr_eq(b, m.source())) {
                out.push(m.source().clone());
            }
        }
        out
    }
}

/// Workgroup grid for `threads` invocations in groups of `wg`, folded into y when x would
/// exceed the 65535 per-dimension limit. Shaders recover the linear index as
/// `(wid.y * nwg.x + wid.x) * WG + lid.x` and must bounds-check it.
pub fn grid1d(threads: usize, wg: u32) -> [u32; 3] {
    let groups = threads.div_ceil(wg as usize).max(1);
    if groups <= 65535 {
        [groups as u32, 1, 1]
    } else {
        let y = groups.div_ceil(65535);
        [groups.div_ceil(y) as u32, y as u32, 1]
    }
}

/// Grid for a kernel whose threads are `threads` in total (see [`grid1d`]).
pub fn grid_for(k: &Kernel, threads: usize) -> [u32; 3] {
    grid1d(threads, k.workgroup)
}

impl Gpu {
    /// Binds `params` (uniform, binding 0: the kernel's `#[repr(C)]` parameter struct, laid out
    /// as the shader's `Params`) and `buffers` (bindings 1..) to `kernel`.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        kernel: &Kernel,
        params: &P,
        buffers: &[&Tensor],
        grid: [u32; 3],
    ) -> Dispatch {
        self.dispatch_mirrored(kernel, params, buffers, Vec::new(), grid)
    }

    /// [`Gpu::dispatch`] for a kernel that also reads texture operands: `mirrors` bind to
    /// `kernel.textures`, in order, and are filled from their buffers before each launch.
    pub fn dispatch_mirrored<P: bytemuck::Pod>(
        &self,
        kernel: &Kernel,
        params: &P,
        buffers: &[&Tensor],
        mirrors: Vec<Arc<TexMirror>>,
        grid: [u32; 3],
    ) -> Dispatch {
        assert_eq!(
            mirrors.len(),
            kernel.textures.len(),
            "kernel {} takes {} textures",
            kernel.id,
            kernel.textures.len()
        );
        assert_eq!(
            buffers.len(),
            kernel.storage.len(),
            "kernel {} takes {} storage buffers",
            kernel.id,
            kernel.storage.len()
        );
        let pipeline = self.pipeline(kernel);
        // Uniform blocks are sized in 16-byte steps; the padding is never read.
        let mut bytes = bytemuck::bytes_of(params).to_vec();
        while bytes.is_empty() || !bytes.len().is_multiple_of(16) {
            bytes.push(0);
        }
        let pbuf = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(kernel.id),
            contents: &bytes,
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: pbuf.as_entire_binding() }];
        for (&(binding, _), t) in kernel.storage.iter().zip(buffers) {
            entries.push(wgpu::BindGroupEntry { binding, resource: t.buf.as_entire_binding() });
        }
        for (&binding, m) in kernel.textures.iter().zip(&mirrors) {
            entries.push(wgpu::BindGroupEntry {
                binding,
                resource: wgpu::BindingResource::TextureView(&m.view),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(kernel.id),
            layout: &pipeline.layout,
            entries: &entries,
        });
        Dispatch {
            kernel: kernel.id,
            tunable: None,
            pipeline,
            bind_group,
            grid,
            _params: pbuf,
            bound: buffers.iter().map(|t| t.buf.clone()).collect(),
            mirrors,
        }
    }
}
