//! Static checks of the WGSL sources with naga (no GPU needed): every shader parses and
//! validates, and every `Kernel` constant agrees with its source (entry point, workgroup size,
//! bindings and their access modes).

use std::collections::HashSet;

use maskaq::gpu::Kernel;
use maskaq::ops::{
    self, attention, augment, copy, distill, embed, gelu, heads, layernorm, loss, matmul_variants,
    objectives, optim, psaq, quant, reduce, softmax, synth, window,
};
use naga::valid::{Capabilities, ModuleInfo, ValidationFlags, Validator};

/// Every kernel the ops modules define (keep in sync with `src/ops/*.rs`); the matmul variants
/// and the fused attention's per-head-size families come from their tables ([`all_kernels`]).
const KERNELS: &[&Kernel] = &[
    &augment::SHIFT_FLIP,
    &augment::RRC_FLIP,
    &augment::GRAY_MEAN,
    &augment::COLOR_STEP,
    &augment::BLUR_PASS,
    &copy::COPY,
    &copy::COPY_GRID,
    &copy::FILL,
    &copy::FILL4,
    &reduce::SUM_SEGMENTS,
    &distill::KD,
    &distill::HD_WEIGHTS,
    &distill::HD_SSIM,
    &embed::PATCHIFY,
    &embed::UNPATCHIFY,
    &embed::TOKENS,
    &gelu::FORWARD,
    &gelu::BACKWARD,
    &gelu::FORWARD_Q,
    &gelu::BACKWARD_MASKED,
    &heads::MERGE_Q,
    &heads::SPLIT_ADD,
    &heads::SPLIT_MASKED_ADD,
    &layernorm::FORWARD,
    &layernorm::BACKWARD_INPUT,
    &layernorm::BACKWARD_PARAMS,
    &layernorm::FORWARD_COPY,
    &layernorm::FORWARD_COPY_Q,
    &layernorm::BACKWARD_INPUT_MASKED,
    &loss::CROSS_ENTROPY,
    &objectives::SSIM_HEADS,
    &objectives::SSIM_HEADS_WG,
    &objectives::ENTROPY_ROWS,
    &objectives::ENTROPY_GRAM,
    &objectives::ENTROPY_VAR,
    &objectives::ENTROPY_VAR_WG,
    &objectives::ENTROPY_BACKWARD,
    &objectives::ENTROPY_BACKWARD_WG,
    &objectives::CLS_MEAN,
    &objectives::MASK_TOPK,
    &objectives::MASK_DROP,
    &objectives::MASK_COUNT,
    &objectives::MASKED_ALIGNMENT,
    &optim::ADAMW,
    &optim::SGD,
    &psaq::ROWS,
    &psaq::SIMS,
    &psaq::RANGE_IMAGE,
    &psaq::RANGE,
    &psaq::ENTROPY,
    &psaq::BACKWARD,
    &quant::WEIGHT,
    &quant::FORWARD,
    &quant::STATS,
    &quant::INIT,
    &quant::BACKWARD,
    &quant::GRAD,
    &quant::MASK,
    &quant::FORWARD_QKV,
    &quant::MASK_QKV,
    &quant::GRAD_WG,
    &quant::MINMAX_PARTIAL,
    &quant::MINMAX_MERGE,
    &quant::DIV_CHECK,
    &reduce::SUM_ROWS,
    &softmax::FORWARD,
    &softmax::BACKWARD,
    &softmax::FORWARD_Q,
    &softmax::BACKWARD_MASKED,
    &synth::TV_PARTIAL,
    &synth::TV_REDUCE,
    &synth::TV_GRAD,
    &synth::JITTER_FORWARD,
    &synth::JITTER_BACKWARD,
    &synth::CLAMP_CHANNELS,
    &window::TOKEN_MAP,
    &window::REL_BIAS,
    &window::REL_BIAS_TABLE_GRAD,
    &window::MEAN_TOKENS,
];

fn parse_and_validate(name: &str, source: &str) -> (naga::Module, ModuleInfo) {
    let module = match naga::front::wgsl::parse_str(source) {
        Ok(m) => m,
        Err(e) => panic!("{name}: WGSL parse error:\n{}", e.emit_to_string_with_path(source, name)),
    };
    let info = match Validator::new(ValidationFlags::all(), Capabilities::all()).validate(&module) {
        Ok(i) => i,
        Err(e) => panic!("{name}: naga validation error:\n{}", e.emit_to_string_with_path(source, name)),
    };
    (module, info)
}

#[test]
fn every_shader_parses_and_validates() {
    assert!(!ops::SHADERS.is_empty());
    let mut names = HashSet::new();
    for &(name, source) in ops::SHADERS {
        assert!(names.insert(name), "{name} listed twice in ops::SHADERS");
        let (module, _) = parse_and_validate(name, source);
        assert!(!module.entry_points.is_empty(), "{name}: no entry points");
    }
    // Helpers parse together (fake_quant.wgsl calls exact_div.wgsl and reads the quantizer
    // state its includer declares) and are appended to at least one listed shader.
    let state = "@group(0) @binding(0) var<storage, read> qparams: array<f32>;\n\
                 @group(0) @binding(1) var<storage, read> qmeta: array<f32>;\n";
    let helpers: String = ops::SHADER_HELPERS.iter().map(|&(_, s)| s).collect();
    parse_and_validate("shader helpers", &format!("{state}{helpers}"));
    for &(name, source) in ops::SHADER_HELPERS {
        assert!(ops::SHADERS.iter().any(|(_, s)| s.contains(source)), "helper {name} is used by no shader");
        names.insert(name);
    }
    // Every shader file on disk is listed, or is part of a listed source (attention.wgsl and
    // its loaders).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for entry in std::fs::read_dir(dir).expect("read shaders/") {
        let entry = entry.unwrap();
        let file = entry.file_name().into_string().unwrap();
        if file.ends_with(".wgsl") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let part = ops::SHADERS.iter().any(|(_, s)| s.contains(text.as_str()));
            assert!(names.contains(file.as_str()) || part, "shaders/{file} is not in ops::SHADERS");
        }
    }
}

fn all_kernels() -> Vec<&'static Kernel> {
    let attention = [
        &attention::FORWARD,
        &attention::FORWARD_TEX,
        &attention::BACKWARD_ROWS,
        &attention::BACKWARD_ROWS_TEX,
        &attention::BACKWARD_KEYS,
        &attention::BACKWARD_KEYS_TEX,
    ];
    KERNELS
        .iter()
        .copied()
        .chain(matmul_variants::VARIANTS.iter().map(|v| &v.kernel))
        .chain(attention.into_iter().flatten())
        .collect()
}

#[test]
fn every_kernel_matches_its_source() {
    // An id names one kernel, or one family that differs only in its constants.
    let mut ids = HashSet::new();
    for k in all_kernels() {
        let constants: Vec<(&str, u64)> = k.constants.iter().map(|&(n, v)| (n, v.to_bits())).collect();
        assert!(ids.insert((k.id, constants)), "kernel id {} used twice", k.id);
        let file = ops::SHADERS
            .iter()
            .find(|(_, s)| *s == k.source)
            .map(|(n, _)| *n)
            .unwrap_or_else(|| panic!("kernel {}: its source is not in ops::SHADERS", k.id));
        let (module, info) = parse_and_validate(file, k.source);
        let names: Vec<&str> = module.entry_points.iter().map(|e| e.name.as_str()).collect();
        let idx = names.iter().position(|&n| n == k.entry).unwrap_or_else(|| {
            panic!("kernel {}: entry point `{}` not in {file} (has {names:?})", k.id, k.entry)
        });
        let ep = &module.entry_points[idx];
        for (name, _) in k.constants {
            assert!(
                module.overrides.iter().any(|(_, o)| o.name.as_deref() == Some(*name)),
                "kernel {}: constant {name} is not an `override` in {file}",
                k.id
            );
        }
        assert_eq!(ep.stage, naga::ShaderStage::Compute, "kernel {}: not a compute entry point", k.id);
        assert_eq!(
            ep.workgroup_size,
            [k.workgroup, 1, 1],
            "kernel {}: Kernel::workgroup disagrees with @workgroup_size in {file}",
            k.id
        );

        // Bindings: 0 is the uniform parameter block; `storage` must name exactly the storage
        // buffers with the declared access, and cover every one the entry point touches; every
        // buffer bound read_write is written by the entry point.
        let uses = info.get_entry_point(idx);
        let mut listed = HashSet::new();
        for &(binding, rw) in k.storage {
            assert!(listed.insert(binding), "kernel {}: binding {binding} listed twice", k.id);
            assert_ne!(binding, 0, "kernel {}: binding 0 is the uniform block", k.id);
            let (_, var) = module
                .global_variables
                .iter()
                .find(|(_, v)| v.binding.as_ref().is_some_and(|b| b.group == 0 && b.binding == binding))
                .unwrap_or_else(|| panic!("kernel {}: no @binding({binding}) in {file}", k.id));
            match var.space {
                naga::AddressSpace::Storage { access } => assert_eq!(
                    access.contains(naga::StorageAccess::STORE),
                    rw,
                    "kernel {}: binding {binding} ({:?}) read_write flag disagrees with {file}",
                    k.id,
                    var.name
                ),
                other => panic!("kernel {}: binding {binding} is {other:?}, not storage", k.id),
            }
            // A buffer bound read_write gets a barrier before every launch that binds it (wgpu
            // treats such a use as exclusive): inputs must be bound read-only.
            if rw {
                let h = module.global_variables.iter().find(|(_, v)| std::ptr::eq(*v, var)).unwrap().0;
                assert!(
                    uses[h].contains(naga::valid::GlobalUse::WRITE),
                    "kernel {}: binding {binding} ({:?}) is read_write but `{}` never writes it",
                    k.id,
                    var.name,
                    k.entry
                );
            }
        }
        // Texture operands: each listed binding is a sampled 2-D float texture.
        for &binding in k.textures {
            assert!(listed.insert(binding), "kernel {}: binding {binding} listed twice", k.id);
            let (_, var) = module
                .global_variables
                .iter()
                .find(|(_, v)| v.binding.as_ref().is_some_and(|b| b.group == 0 && b.binding == binding))
                .unwrap_or_else(|| panic!("kernel {}: no @binding({binding}) in {file}", k.id));
            let is_texture = matches!(
                module.types[var.ty].inner,
                naga::TypeInner::Image {
                    dim: naga::ImageDimension::D2,
                    arrayed: false,
                    class: naga::ImageClass::Sampled { kind: naga::ScalarKind::Float, multi: false }
                }
            );
            assert!(
                is_texture,
                "kernel {}: binding {binding} ({:?}) is not a texture_2d<f32>",
                k.id, var.name
            );
        }
        for (h, var) in module.global_variables.iter() {
            let Some(rb) = &var.binding else { continue };
            if uses[h].is_empty() {
                continue;
            }
            assert_eq!(rb.group, 0, "kernel {}: uses group {}", k.id, rb.group);
            if rb.binding == 0 {
                assert_eq!(var.space, naga::AddressSpace::Uniform, "kernel {}: binding 0", k.id);
            } else {
                assert!(
                    listed.contains(&rb.binding),
                    "kernel {}: entry `{}` uses @binding({}) ({:?}) which Kernel::storage and ::textures omit",
                    k.id,
                    k.entry,
                    rb.binding,
                    var.name
                );
            }
        }
    }
    // Every entry point of every shader has a Kernel.
    for &(file, source) in ops::SHADERS {
        let module = naga::front::wgsl::parse_str(source).unwrap();
        for ep in &module.entry_points {
            assert!(
                // A source that appends kernels to another (matmul_subgroup) holds that one's
                // entry points too; they have their Kernel under the source they come from.
                all_kernels()
                    .iter()
                    .any(|k| k.entry == ep.name && (k.source == source || source.contains(k.source))),
                "{file}: entry point `{}` has no Kernel in the KERNELS list",
                ep.name
            );
        }
    }
}
