//! One module per shader file: the kernels it holds, how they are launched, and a CPU reference
//! that is the executable specification of each (used by the tests on ragged shapes).

/// A shader source with the fake-quant helpers appended (`shaders/fake_quant.wgsl`, which needs
/// `shaders/exact_div.wgsl`): for every kernel that applies an activation quantizer.
macro_rules! with_fake_quant {
    ($file:literal) => {
        concat!(
            include_str!($file),
            include_str!("../../shaders/fake_quant.wgsl"),
            include_str!("../../shaders/exact_div.wgsl")
        )
    };
}

pub mod attention;
pub mod augment;
pub mod copy;
pub mod distill;
pub mod embed;
pub mod gelu;
pub mod heads;
pub mod layernorm;
pub mod loss;
pub mod matmul;
pub mod matmul_variants;
pub mod objectives;
pub mod optim;
pub mod psaq;
pub mod quant;
pub mod reduce;
pub mod softmax;
pub mod synth;
pub mod window;

/// Every WGSL source in the crate, by file name (validated with naga in the tests).
pub const SHADERS: &[(&str, &str)] = &[
    (attention::SOURCES[0].0, attention::SOURCES[0].1),
    (attention::SOURCES[1].0, attention::SOURCES[1].1),
    ("augment.wgsl", augment::SOURCE),
    ("copy.wgsl", copy::SOURCE),
    ("distill.wgsl", distill::SOURCE),
    ("embed.wgsl", embed::SOURCE),
    ("gelu.wgsl", gelu::SOURCE),
    ("heads.wgsl", heads::SOURCE),
    ("layernorm.wgsl", layernorm::SOURCE),
    ("loss.wgsl", loss::SOURCE),
    ("matmul.wgsl", matmul::SOURCE),
    ("matmul_subgroup.wgsl", matmul::SUBGROUP_SOURCE),
    ("matmul_tex.wgsl", matmul::TEX_SOURCE),
    ("objectives.wgsl", objectives::SOURCE),
    ("optim.wgsl", optim::SOURCE),
    ("psaq.wgsl", psaq::SOURCE),
    ("quant.wgsl", quant::SOURCE),
    ("exact_div_check.wgsl", quant::DIV_CHECK_SOURCE),
    ("reduce.wgsl", reduce::SOURCE),
    ("sum_segments.wgsl", reduce::SEGMENTS_SOURCE),
    ("softmax.wgsl", softmax::SOURCE),
    ("synth.wgsl", synth::SOURCE),
    ("window.wgsl", window::SOURCE),
];

/// Function-only WGSL files appended to the shaders above (no entry points of their own).
pub const SHADER_HELPERS: &[(&str, &str)] = &[
    ("dot.wgsl", include_str!("../../shaders/dot.wgsl")),
    ("exact_div.wgsl", include_str!("../../shaders/exact_div.wgsl")),
    ("fake_quant.wgsl", include_str!("../../shaders/fake_quant.wgsl")),
];

/// A `usize` that must fit a shader's u32 index.
pub(crate) fn u(v: usize) -> u32 {
    u32::try_from(v).expect("tensor index exceeds u32: tensor too large for one binding")
}
