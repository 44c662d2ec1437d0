//! `maskaq devices`: every adapter wgpu can see.

use anyhow::Result;

use crate::gpu::{GpuOptions, list_adapters};

#[derive(clap::Args, Debug)]
pub struct DevicesArgs {
    /// Print the list as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(opts: &GpuOptions, args: &DevicesArgs) -> Result<()> {
    let json = args.json;
    let list = list_adapters(opts)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for a in &list {
        println!(
            "{}{} [{}; {}] driver: {} {}",
            if a.default_choice { "* " } else { "  " },
            a.name,
            a.backend,
            a.device_type,
            a.driver,
            a.driver_info
        );
        println!(
            "    f16: {}  subgroups: {} (size {}..{})  timestamps: {}",
            a.f16, a.subgroups, a.subgroup_size[0], a.subgroup_size[1], a.timestamp_queries
        );
        println!(
            "    max storage binding {} MiB, max buffer {} MiB, workgroup storage {} KiB, {} invocations/workgroup, {} storage buffers/stage",
            a.max_storage_buffer_binding_size >> 20,
            a.max_buffer_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.max_compute_invocations_per_workgroup,
            a.max_storage_buffers_per_shader_stage
        );
    }
    println!("(* = chosen by default; pick another with --adapter NAME or --backend vulkan|metal|dx12|gl)");
    Ok(())
}
