use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use super::kernel::{Dispatch, Kernel, Pipeline, PipelineKey};
use super::tune::{TuneMode, Tuning};

/// A graphics API, as `--backend` names it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    #[value(alias = "vk")]
    Vulkan,
    #[value(alias = "mtl")]
    Metal,
    #[value(alias = "d3d12")]
    Dx12,
    #[value(alias = "gles", alias = "opengl")]
    Gl,
}

impl Backend {
    fn backends(self) -> wgpu::Backends {
        match self {
            Backend::Vulkan => wgpu::Backends::VULKAN,
            Backend::Metal => wgpu::Backends::METAL,
            Backend::Dx12 => wgpu::Backends::DX12,
            Backend::Gl => wgpu::Backends::GL,
        }
    }
}

/// How the user asked for an adapter (`--backend`, `--adapter`); empty means "the fastest one".
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    pub backend: Option<Backend>,
    /// A case-insensitive substring of the adapter name.
    pub adapter: Option<String>,
    /// How kernel variants are picked (`--tune`).
    pub tune: TuneMode,
    /// The tuning cache file (`--tune-cache`; default: one per adapter in the cache directory).
    pub tune_cache: Option<std::path::PathBuf>,
    /// `--unfused`: see [`Gpu::unfused`].
    pub unfused: bool,
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
    /// Loop iterations one shader invocation may run in all, where the driver caps them:
    /// llvmpipe (lavapipe, and Mesa's GL on llvmpipe) ends every loop of an invocation once
    /// 65,535 iterations have run in total, silently (Mesa's `LP_MAX_TGSI_LOOP_ITERATIONS`).
    /// Kernels whose serial loops could go further take their chunked variants
    /// ([`Gpu::fits_one_invocation`]).
    pub loop_limit: Option<usize>,
    /// Tests only: the quantizer shaders' divisions that decide no rounding are moved by this
    /// many ULP, as an adapter with inexact division would (Vulkan allows 2.5). Set it before
    /// the first launch: pipelines are built once per kernel.
    pub div_error_ulp: i32,
    /// The per-adapter tuning cache: which variant each (op, shape) uses.
    pub tuning: Tuning,
    /// Graphs built on this device launch every op on its own, none of the fused kernels
    /// (`--unfused`; the tests compare both ways bit for bit).
    pub unfused: bool,
    /// Tests only: graphs run the attention op by op even where they would fuse it (the fused
    /// attention agrees with it to rounding, the other fusions bit for bit).
    pub unfused_attention: bool,
    /// Graphs without parameter gradients (image synthesis, the FP model) run the attention's
    /// backward as two fused launches where it fits (`attention_backward_rows` / `_keys`); on
    /// by default, tests turn it off to compare with the op-by-op backward.
    pub fused_attention_backward: bool,
    /// Tests only: a kernel variant id every launch of its op uses wherever it applies.
    pub forced_variant: Option<String>,
    /// Tests only: offer test-only variants (a deliberately slow one) to the tuner.
    pub test_variants: bool,
    /// Whether the matmul's subgroup variants gave the portable kernels' results bit for bit
    /// on this device (checked on first use: `ops::matmul_variants::untuned`).
    pub subgroup_kernels: std::sync::OnceLock<bool>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
    /// Storage buffers by byte size; one whose only owner is the pool is free for reuse.
    pub(crate) pool: Mutex<HashMap<u64, Vec<Arc<wgpu::Buffer>>>>,
    /// Readback (MAP_READ) buffers by byte size, reused across reads.
    pub(crate) staging: Mutex<HashMap<u64, Vec<wgpu::Buffer>>>,
    /// Texture mirrors by (buffer, first float, floats): launches reading the same range share
    /// one texture (each refills it right before it reads).
    pub(crate) mirrors: Mutex<HashMap<(usize, usize, usize), std::sync::Weak<super::TexMirror>>>,
    /// The first GPU error (validation, out of memory, lost device) the driver reported, as one
    /// line. wgpu reports them through callbacks; [`Gpu::wait`] (every readback) turns it into an
    /// `Err`, so a failing run ends with one `maskaq: error:` line instead of a process exit
    /// inside a callback.
    errors: Arc<Mutex<Option<String>>>,
    /// The previous submission of [`Gpu::run`]/[`Gpu::run_all`].
    in_flight: Mutex<Option<wgpu::SubmissionIndex>>,
}

/// A wgpu error as one line, with a hint for the user.
fn describe_gpu_error(e: &wgpu::Error) -> String {
    let flat = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
    match e {
        wgpu::Error::OutOfMemory { .. } => "the GPU ran out of memory (try a smaller --batch, \
            --synth-batch or --train-batch, or a smaller model)"
            .to_string(),
        wgpu::Error::Validation { description, .. } => format!(
            "GPU validation error: {} (a limit of this adapter or a bug in maskaq; `maskaq devices` \
             shows the limits)",
            flat(description.clone())
        ),
        wgpu::Error::Internal { description, .. } => {
            format!("GPU internal error: {}", flat(description.clone()))
        }
    }
}

/// Why no adapter was found, and what to do about it.
fn no_adapter_help(backends: wgpu::Backends, asked: Option<&str>) -> String {
    let compiled = wgpu::Instance::enabled_backend_features();
    match asked {
        Some(what) if !compiled.contains(backends) => format!(
            "{what}: this build of maskaq has no such backend on this platform (it has {})",
            backend_names(compiled)
        ),
        Some(what) => {
            format!("{what}: no adapter on that backend (`maskaq devices` without it lists every adapter)")
        }
        None => "no GPU adapter found. On Linux without a GPU install the software Vulkan driver: \
                 `sudo apt-get install -y mesa-vulkan-drivers libvulkan1`; on other systems update \
                 the graphics driver"
            .to_string(),
    }
}

fn backend_names(b: wgpu::Backends) -> String {
    let names: Vec<&str> = [
        (wgpu::Backends::VULKAN, "vulkan"),
        (wgpu::Backends::METAL, "metal"),
        (wgpu::Backends::DX12, "dx12"),
        (wgpu::Backends::GL, "gl"),
    ]
    .into_iter()
    .filter(|(f, _)| b.contains(*f))
    .map(|(_, n)| n)
    .collect();
    if names.is_empty() { "none".into() } else { names.join(", ") }
}

/// The backends `WGPU_BACKEND` asks for (wgpu's comma-separated names), checked here because
/// wgpu drops names it does not know and would then find no adapter without saying why.
fn env_backends() -> Result<Option<(wgpu::Backends, String)>> {
    let Ok(v) = std::env::var("WGPU_BACKEND") else { return Ok(None) };
    let mut b = wgpu::Backends::empty();
    for name in v.split(',').map(|n| n.trim().to_ascii_lowercase()).filter(|n| !n.is_empty()) {
        b |= match name.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "webgpu" => wgpu::Backends::BROWSER_WEBGPU,
            _ => bail!("WGPU_BACKEND={v}: unknown backend `{name}` (expected vulkan, metal, dx12 or gl)"),
        };
    }
    if b.is_empty() {
        bail!("WGPU_BACKEND is set but empty (expected vulkan, metal, dx12 or gl, or unset it)");
    }
    Ok(Some((b, format!("WGPU_BACKEND={v}"))))
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

/// The instance, the backends it was asked for and, when the user named them, how
/// (`--backend X` or `WGPU_BACKEND=X`), for error messages.
fn instance(opts: &GpuOptions) -> Result<(wgpu::Instance, wgpu::Backends, Option<String>)> {
    quiet_device_select_layer();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    let asked = match (opts.backend, env_backends()?) {
        (Some(b), _) => {
            let name = format!("{b:?}").to_lowercase();
            Some((b.backends(), format!("--backend {name}")))
        }
        (None, env) => env,
    };
    if let Some((b, _)) = &asked {
        desc.backends = *b;
    }
    let backends = desc.backends;
    Ok((wgpu::Instance::new(desc), backends, asked.map(|(_, how)| how)))
}

/// One item of `--adapters`: `all`, a backend (`vulkan`, `metal`, `dx12`, `gl`), a
/// case-insensitive substring of the adapter name, or `BACKEND:SUBSTRING`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterItem {
    /// The item as written (for errors).
    pub text: String,
    pub backend: Option<wgpu::Backend>,
    /// Lower-case substring of the adapter name (empty: any).
    pub name: String,
    /// `all`: every matching adapter, not only the best one.
    pub every: bool,
}

impl AdapterItem {
    pub fn parse_list(list: &str) -> Result<Vec<AdapterItem>> {
        let items: Vec<AdapterItem> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(AdapterItem::parse)
            .collect::<Result<_>>()?;
        if items.is_empty() {
            bail!("--adapters `{list}`: expected a comma list such as vulkan,gl (or all)");
        }
        Ok(items)
    }

    pub fn parse(text: &str) -> Result<AdapterItem> {
        let backend_of = |s: &str| match s.to_ascii_lowercase().as_str() {
            "vulkan" | "vk" => Some(wgpu::Backend::Vulkan),
            "metal" | "mtl" => Some(wgpu::Backend::Metal),
            "dx12" | "d3d12" => Some(wgpu::Backend::Dx12),
            "gl" | "gles" | "opengl" => Some(wgpu::Backend::Gl),
            _ => None,
        };
        let item = |backend, name: &str, every| AdapterItem {
            text: text.to_string(),
            backend,
            name: name.to_lowercase(),
            every,
        };
        if text.eq_ignore_ascii_case("all") {
            return Ok(item(None, "", true));
        }
        if let Some((b, name)) = text.split_once(':') {
            let Some(backend) = backend_of(b) else {
                bail!(
                    "--adapters: `{text}`: `{b}` is no backend (expected vulkan, metal, dx12 or gl before the colon)"
                );
            };
            return Ok(item(Some(backend), name, false));
        }
        Ok(match backend_of(text) {
            Some(b) => item(Some(b), "", false),
            None => item(None, text, false),
        })
    }

    fn matches(&self, info: &wgpu::AdapterInfo) -> bool {
        self.backend.is_none_or(|b| b == info.backend) && info.name.to_lowercase().contains(&self.name)
    }
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
    pub max_storage_buffers_per_shader_stage: u32,
    pub default_choice: bool,
}

/// Every adapter wgpu can see with the given options, best first.
pub fn list_adapters(opts: &GpuOptions) -> Result<Vec<AdapterReport>> {
    let (inst, backends, asked) = instance(opts)?;
    let mut adapters = pollster::block_on(inst.enumerate_adapters(backends));
    if adapters.is_empty() {
        bail!("{}", no_adapter_help(backends, asked.as_deref()));
    }
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
                max_storage_buffers_per_shader_stage: l.max_storage_buffers_per_shader_stage,
                default_choice: i == 0,
            }
        })
        .collect())
}

impl Gpu {
    /// Whether one invocation may run `iterations` loop iterations (half the driver's cap, as
    /// every loop of the invocation counts against it).
    pub fn fits_one_invocation(&self, iterations: usize) -> bool {
        self.loop_limit.is_none_or(|l| iterations <= l / 2)
    }

    /// Opens the adapter chosen by `opts`, `WGPU_ADAPTER_NAME`/`WGPU_BACKEND`, or the best one.
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        let (inst, backends, asked) = instance(opts)?;
        let mut adapters = pollster::block_on(inst.enumerate_adapters(backends));
        if adapters.is_empty() {
            bail!("{}", no_adapter_help(backends, asked.as_deref()));
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
        Self::from_adapter(adapter, opts)
    }

    /// One device per item of `--adapters LIST` (see [`AdapterItem`]), in the list's order: an
    /// item naming the same adapter twice opens it twice. `all` opens every adapter once.
    pub fn open_list(opts: &GpuOptions, list: &str) -> Result<Vec<Gpu>> {
        let items = AdapterItem::parse_list(list)?;
        // The list names its backends itself: every backend is searched, whatever
        // --backend or WGPU_BACKEND say.
        quiet_device_select_layer();
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = wgpu::Backends::all();
        let backends = desc.backends;
        let inst = wgpu::Instance::new(desc);
        let enumerate = || {
            let mut a = pollster::block_on(inst.enumerate_adapters(backends));
            a.sort_by_key(|a| -preference(&a.get_info()));
            a
        };
        let first = enumerate();
        if first.is_empty() {
            bail!("{}", no_adapter_help(backends, None));
        }
        let names: Vec<String> = first
            .iter()
            .map(|a| {
                let i = a.get_info();
                format!("{}:{}", format!("{:?}", i.backend).to_lowercase(), i.name)
            })
            .collect();
        let mut picks = Vec::new();
        for item in &items {
            let matches: Vec<usize> = first
                .iter()
                .enumerate()
                .filter(|(_, a)| item.matches(&a.get_info()))
                .map(|(k, _)| k)
                .collect();
            if matches.is_empty() {
                bail!(
                    "--adapters: `{}` matches no adapter; the adapters are: {}",
                    item.text,
                    names.join(", ")
                );
            }
            if item.every {
                picks.extend(matches);
            } else {
                picks.push(matches[0]);
            }
        }
        // A fresh enumeration per device: each gets its own adapter handle.
        picks.into_iter().map(|k| Self::from_adapter(enumerate().swap_remove(k), opts)).collect()
    }

    fn from_adapter(adapter: wgpu::Adapter, opts: &GpuOptions) -> Result<Gpu> {
        let info = adapter.get_info();
        // Subgroups only for the kernels written for them (matmul_variants: `subgroup`).
        let wanted = wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
        let features = adapter.features() & wanted;
        // Ask for the adapter's own buffer limits: full-size ViT attention maps exceed the
        // 128 MiB default binding size at large batches; and up to 16 storage buffers per stage
        // (the fused attention backward binds 13: ops::attention). Everything else stays at
        // the default.
        let al = adapter.limits();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: al.max_storage_buffer_binding_size,
            max_buffer_size: al.max_buffer_size,
            max_storage_buffers_per_shader_stage: al.max_storage_buffers_per_shader_stage.min(16),
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
        let errors: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let sink = errors.clone();
        device.on_uncaptured_error(Arc::new(move |e| {
            let mut first = sink.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| describe_gpu_error(&e));
        }));
        let sink = errors.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if reason != wgpu::DeviceLostReason::Destroyed {
                let mut first = sink.lock().unwrap_or_else(|p| p.into_inner());
                let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
                first.get_or_insert_with(|| format!("the GPU device was lost ({reason:?}: {msg})"));
            }
        });
        let cpu_like = info.device_type == wgpu::DeviceType::Cpu
            || std::env::var("MASKAQ_CPU_KERNELS").is_ok_and(|v| v == "1");
        let llvmpipe = [&info.name, &info.driver, &info.driver_info].iter().any(|s| s.contains("llvmpipe"));
        let loop_limit = llvmpipe.then_some(65_535);
        let tuning = Tuning::open(&info, opts.tune, opts.tune_cache.clone());
        Ok(Gpu {
            device,
            queue,
            info,
            features,
            limits,
            cpu_like,
            loop_limit,
            div_error_ulp: 0,
            tuning,
            unfused: opts.unfused,
            unfused_attention: false,
            fused_attention_backward: true,
            forced_variant: None,
            test_variants: false,
            subgroup_kernels: std::sync::OnceLock::new(),
            pipelines: Mutex::new(HashMap::new()),
            pool: Mutex::new(HashMap::new()),
            staging: Mutex::new(HashMap::new()),
            mirrors: Mutex::new(HashMap::new()),
            errors,
            in_flight: Mutex::new(None),
        })
    }

    /// The subgroup size, where the device has subgroups and they always have one size.
    pub fn fixed_subgroup_size(&self) -> Option<u32> {
        let (lo, hi) = (self.info.subgroup_min_size, self.info.subgroup_max_size);
        (self.features.contains(wgpu::Features::SUBGROUP) && lo == hi && lo > 0).then_some(lo)
    }

    /// The first GPU error reported so far, as an `Err`.
    pub fn check(&self) -> Result<()> {
        match self.errors.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(e) => Err(anyhow!("{e}")),
            None => Ok(()),
        }
    }

    /// Fails, naming `what` (a flag and its value, say), when one buffer of `bytes` exceeds what
    /// this adapter can allocate or bind: checked before allocating, because wgpu would only
    /// report it later, and the host might try to allocate it first.
    pub fn check_buffer_size(&self, bytes: u64, what: &str) -> Result<()> {
        let max = self.limits.max_buffer_size.min(self.limits.max_storage_buffer_binding_size);
        if bytes > max {
            bail!(
                "{what} needs a GPU buffer of {} MiB; this adapter ({}) allows {} MiB per buffer",
                bytes >> 20,
                self.info.name,
                max >> 20
            );
        }
        Ok(())
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
        map.entry(kernel.pipeline_key())
            .or_insert_with(|| Arc::new(Pipeline::build(&self.device, kernel, self.div_error_ulp)))
            .clone()
    }

    /// Blocks until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        let polled = self.device.poll(wgpu::PollType::wait_indefinitely());
        // A recorded error explains a failed poll better than the poll's own error.
        self.check()?;
        polled.map_err(|e| anyhow!("GPU poll failed: {e}"))?;
        Ok(())
    }

    /// Records `dispatches` in order and submits them (see [`Gpu::submit`]).
    pub fn run(&self, dispatches: &[&Dispatch]) {
        let mut enc = self.device.create_command_encoder(&Default::default());
        encode(&mut enc, dispatches, None);
        self.submit(enc);
    }

    /// Records several dispatch lists, in order, and submits them.
    pub fn run_all(&self, lists: &[&[Dispatch]]) {
        let all: Vec<&Dispatch> = lists.iter().flat_map(|l| l.iter()).collect();
        self.run(&all);
    }

    /// Submits `enc` and waits for the previous submission (not this one): at most two are in
    /// flight, so the GPU stays busy but the host never runs far ahead of it, and a Ctrl-C or
    /// a GPU error is seen within a step instead of after thousands of queued ones.
    fn submit(&self, enc: wgpu::CommandEncoder) {
        let index = self.queue.submit([enc.finish()]);
        let previous = self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).replace(index);
        if let Some(prev) = previous {
            // An error here is recorded by the device callbacks and reported by the next wait.
            let _ = self.device.poll(wgpu::PollType::Wait { submission_index: Some(prev), timeout: None });
        }
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
        encode(&mut enc, dispatches, qs.as_ref());
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

/// Records `dispatches` in order: one compute pass, split where a launch reads texture mirrors
/// (their buffer-to-texture copies must be recorded outside a pass, right before it). With
/// `stamps`, the first pass writes timestamp 0 at its start and the last timestamp 1 at its end.
fn encode(enc: &mut wgpu::CommandEncoder, dispatches: &[&Dispatch], stamps: Option<&wgpu::QuerySet>) {
    let mut starts: Vec<usize> =
        (0..dispatches.len()).filter(|&i| i == 0 || !dispatches[i].mirrors.is_empty()).collect();
    if starts.is_empty() {
        starts.push(0);
    }
    for (s, &start) in starts.iter().enumerate() {
        let end = starts.get(s + 1).copied().unwrap_or(dispatches.len());
        if let Some(d) = dispatches.get(start) {
            for m in &d.mirrors {
                m.encode_copy(enc);
            }
        }
        let (first, last) = (s == 0, s + 1 == starts.len());
        let writes = stamps.filter(|_| first || last).map(|q| wgpu::ComputePassTimestampWrites {
            query_set: q,
            beginning_of_pass_write_index: first.then_some(0),
            end_of_pass_write_index: last.then_some(1),
        });
        let mut pass =
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: writes });
        for d in &dispatches[start..end] {
            d.record(&mut pass);
        }
    }
}
