use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use super::kernel::{Dispatch, Kernel, Pipeline};

/// How the user asked for an adapter (`--backend`, `--adapter`); empty means "the fastest one".
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: Option<String>,
    /// A case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
}

/// The device maskaq computes on.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub features: wgpu::Features,
    pub limits: wgpu::Limits,
    /// A CPU adapter (lavapipe, SwiftShader, WARP): workgroup barriers are very slow there, so
    /// hot kernels use their barrier-free variants.
    pub cpu_like: bool,
    /// Tests only: the quantizer shaders' divisions that decide no rounding are moved by this
    /// many ULP, as an adapter with inexact division would (Vulkan allows 2.5). Set it before
    /// the first launch: pipelines are built once per kernel.
    pub div_error_ulp: i32,
    pipelines: Mutex<HashMap<&'static str, Arc<Pipeline>>>,
    /// Storage buffers by byte size; one whose only owner is the pool is free for reuse.
    pub(crate) pool: Mutex<HashMap<u64, Vec<Arc<wgpu::Buffer>>>>,
    /// Readback (MAP_READ) buffers by byte size, reused across reads.
    pub(crate) staging: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
}

const NO_ADAPTER_HELP: &str = "no GPU adapter found. On Linux without a GPU install the software \
Vulkan driver: `sudo apt-get install -y mesa-vulkan-drivers libvulkan1` (then run with \
WGPU_BACKEND=vulkan); on other systems update the graphics driver. `maskaq devices` lists what \
wgpu can see";

fn parse_backends(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "metal" | "mtl" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        other => bail!("--backend: unknown backend `{other}` (expected vulkan, metal, dx12 or gl)"),
    })
}

/// Switches off Mesa's Vulkan device-select layer (`VK_LAYER_MESA_device_select`) for this
/// process unless the user set its switch themselves. The layer only reorders GPUs for a
/// display server: it connects to Wayland/X11 to find the display's GPU, and without a session
/// (`XDG_RUNTIME_DIR` unset: ssh, containers, CI) it prints two `error:` lines on every start.
/// maskaq is headless and chooses its adapter itself (`preference`), so the layer has nothing to
/// do here; any real Vulkan error still reaches the user.
fn quiet_device_select_layer() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("NODEVICE_SELECT").is_none() {
            // SAFETY: runs once, before this process creates its first graphics instance, so no
            // driver thread that could read the environment concurrently exists yet.
            unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
        }
    });
}

fn instance(opts: &GpuOptions) -> Result<(wgpu::Instance, wgpu::Backends)> {
    quiet_device_select_layer();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if let Some(b) = &opts.backend {
        desc.backends = parse_backends(b)?;
    }
    let backends = desc.backends;
    Ok((wgpu::Instance::new(desc), backends))
}

/// Higher is preferred: discrete GPUs first, software adapters last, GL after native APIs.
fn preference(info: &wgpu::AdapterInfo) -> i32 {
    let ty = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 40,
        wgpu::DeviceType::IntegratedGpu => 30,
        wgpu::DeviceType::VirtualGpu => 20,
        wgpu::DeviceType::Cpu => 10,
        wgpu::DeviceType::Other => 0,
    };
    let api = if info.backend == wgpu::Backend::Gl { 0 } else { 1 };
    ty * 2 + api
}

/// One line of `maskaq devices`.
#[derive(Serialize, Debug)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub f16: bool,
    pub subgroups: bool,
    pub subgroup_size: [u32; 2],
    pub timestamp_queries: bool,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub default_choice: bool,
}

/// Every adapter wgpu can see with the given options, best first.
pub fn list_adapters(opts: &GpuOptions) -> Result<Vec<AdapterReport>> {
    let (inst, backends) = instance(opts)?;
    let mut adapters = pollster::block_on(inst.enumerate_adapters(backends));
    adapters.sort_by_key(|a| -preference(&a.get_info()));
    Ok(adapters
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let info = a.get_info();
            let f = a.features();
            let l = a.limits();
            AdapterReport {
                name: info.name.clone(),
                backend: format!("{:?}", info.backend).to_lowercase(),
                device_type: format!("{:?}", info.device_type),
                driver: info.driver.clone(),
                driver_info: info.driver_info.clone(),
                f16: f.contains(wgpu::Features::SHADER_F16),
                subgroups: f.contains(wgpu::Features::SUBGROUP),
                subgroup_size: [info.subgroup_min_size, info.subgroup_max_size],
                timestamp_queries: f.contains(wgpu::Features::TIMESTAMP_QUERY),
                max_storage_buffer_binding_size: l.max_storage_buffer_binding_size,
                max_buffer_size: l.max_buffer_size,
                max_compute_workgroup_storage_size: l.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
                max_compute_workgroups_per_dimension: l.max_compute_workgroups_per_dimension,
                default_choice: i == 0,
            }
        })
        .collect())
}

impl Gpu {
    /// Opens the adapter chosen by `opts`, `WGPU_ADAPTER_NAME`/`WGPU_BACKEND`, or the best one.
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        let (inst, backends) = instance(opts)?;
        let mut adapters = pollster::block_on(inst.enumerate_adapters(backends));
        if adapters.is_empty() {
            bail!("{NO_ADAPTER_HELP}");
        }
        adapters.sort_by_key(|a| -preference(&a.get_info()));
        let wanted = opts
            .adapter
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .map(|s| s.to_lowercase());
        let adapter = match &wanted {
            Some(w) => {
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                let pos = adapters
                    .iter()
                    .position(|a| a.get_info().name.to_lowercase().contains(w.as_str()))
                    .ok_or_else(|| {
                        anyhow!("--adapter: no adapter name contains `{w}`; adapters: {names:?}")
                    })?;
                adapters.swap_remove(pos)
            }
            None => adapters.swap_remove(0),
        };
        Self::from_adapter(adapter)
    }

    fn from_adapter(adapter: wgpu::Adapter) -> Result<Gpu> {
        let info = adapter.get_info();
        let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16;
        let features = adapter.features() & wanted;
        // Ask for the adapter's own buffer limits: full-size ViT attention maps exceed the
        // 128 MiB default binding size at large batches. Everything else stays at the default.
        let al = adapter.limits();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: al.max_storage_buffer_binding_size,
            max_buffer_size: al.max_buffer_size,
            max_storage_buffers_per_shader_stage: al.max_storage_buffers_per_shader_stage.min(10),
            ..wgpu::Limits::default()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("maskaq"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .with_context(|| format!("could not open a device on adapter `{}`", info.name))?;
        device.on_uncaptured_error(Arc::new(|e| {
            eprintln!("maskaq: GPU error: {e}");
            std::process::exit(3);
        }));
        let cpu_like = info.device_type == wgpu::DeviceType::Cpu
            || std::env::var("MASKAQ_CPU_KERNELS").is_ok_and(|v| v == "1");
        Ok(Gpu {
            device,
            queue,
            info,
            features,
            limits,
            cpu_like,
            div_error_ulp: 0,
            pipelines: Mutex::new(HashMap::new()),
            pool: Mutex::new(HashMap::new()),
            staging: Mutex::new(HashMap::new()),
        })
    }

    /// A one-line description for logs and reports.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name, self.info.backend, self.info.device_type, self.info.driver, self.info.driver_info
        )
    }

    /// The compiled pipeline for `kernel`, built on first use.
    pub(crate) fn pipeline(&self, kernel: &Kernel) -> Arc<Pipeline> {
        let mut map = self.pipelines.lock().expect("pipeline cache poisoned");
        map.entry(kernel.id)
            .or_insert_with(|| Arc::new(Pipeline::build(&self.device, kernel, self.div_error_ulp)))
            .clone()
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| anyhow!("GPU poll failed: {e}"))?;
        Ok(())
    }

    /// Records `dispatches` into one compute pass and submits them. Does not wait.
    pub fn run(&self, dispatches: &[&Dispatch]) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        self.queue.submit([enc.finish()]);
    }

    /// Records several dispatch lists into one pass, in order.
    pub fn run_all(&self, lists: &[&[Dispatch]]) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            for list in lists {
                for d in list.iter() {
                    d.record(&mut pass);
                }
            }
        }
        self.queue.submit([enc.finish()]);
    }

    /// Runs `lists` in one compute pass and waits. Returns the wall-clock seconds and, where the
    /// adapter has timestamp queries, the GPU seconds between the pass's start and end.
    pub fn timed_run(&self, dispatches: &[&Dispatch]) -> Result<(f64, Option<f64>)> {
        let stamps = self.features.contains(wgpu::Features::TIMESTAMP_QUERY);
        let qs = stamps.then(|| {
            self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("bench"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            })
        });
        let resolve = stamps.then(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        });
        let readback = stamps.then(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("timestamps readback"),
                size: 16,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let start = std::time::Instant::now();
        let mut enc = self.device.create_command_encoder(&Default::default());
        {
            let writes = qs.as_ref().map(|q| wgpu::ComputePassTimestampWrites {
                query_set: q,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("timed"),
                timestamp_writes: writes,
            });
            for d in dispatches {
                d.record(&mut pass);
            }
        }
        if let (Some(q), Some(r), Some(rb)) = (&qs, &resolve, &readback) {
            enc.resolve_query_set(q, 0..2, r, 0);
            enc.copy_buffer_to_buffer(r, 0, rb, 0, 16);
        }
        self.queue.submit([enc.finish()]);
        self.wait()?;
        let wall = start.elapsed().as_secs_f64();
        let gpu_s = match &readback {
            Some(rb) => {
                let (tx, rx) = std::sync::mpsc::channel();
                rb.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                    let _ = tx.send(r);
                });
                self.wait()?;
                rx.recv()?.map_err(|e| anyhow!("timestamp readback: {e}"))?;
                let ticks: Vec<u64> = {
                    let view =
                        rb.slice(..).get_mapped_range().map_err(|e| anyhow!("timestamp view: {e:?}"))?;
                    bytemuck::pod_collect_to_vec::<u8, u64>(&view)
                };
                rb.unmap();
                let period = self.queue.get_timestamp_period() as f64;
                let dt = ticks[1].wrapping_sub(ticks[0]) as f64 * period * 1e-9;
                (ticks[1] > ticks[0]).then_some(dt)
            }
            None => None,
        };
        Ok((wall, gpu_s))
    }

    /// Frees pooled buffers that no tensor holds (after dropping a large graph, say).
    pub fn release_unused_buffers(&self) {
        let mut pool = self.pool.lock().expect("buffer pool poisoned");
        for list in pool.values_mut() {
            list.retain(|b| Arc::strong_count(b) > 1);
        }
        self.staging.lock().expect("staging pool poisoned").clear();
    }

    /// Bytes held by the buffer pool: (in use, free).
    pub fn pool_bytes(&self) -> (u64, u64) {
        let pool = self.pool.lock().expect("buffer pool poisoned");
        let mut used = 0;
        let mut free = 0;
        for (size, list) in pool.iter() {
            for b in list {
                if Arc::strong_count(b) > 1 { used += size } else { free += size }
            }
        }
        (used, free)
    }
}
