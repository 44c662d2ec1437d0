
// ---- attention.wgsl's loader of q, k and v: a texture mirror (src/gpu/mirror.rs) -----------
// Texel t holds floats 4t..4t+3 of qkv, at (t mod 2^tw, t / 2^tw).
@group(0) @binding(9) var qkv_tex: texture_2d<f32>;

fn qkv4(t: u32) -> vec4<f32> {
    return textureLoad(qkv_tex, vec2<i32>(i32(t & ((1u << p.tw) - 1u)), i32(t >> p.tw)), 0);
}
@group(0) @binding(20) var do_tex: texture_2d<f32>;

// dO the same way (the backward's keys phase), texel width 2^tw_o.
fn do4(t: u32) -> vec4<f32> {
    return textureLoad(do_tex, vec2<i32>(i32(t & ((1u << p.tw_o) - 1u)), i32(t >> p.tw_o)), 0);
}
