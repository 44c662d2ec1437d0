//! Read-only texture copies of buffer ranges, for kernels that load their operands through
//! textures (the `_tex` matmul variants, docs/ARCHITECTURE.md "Texture operands").
//!
//! Why: Mesa's llvmpipe (lavapipe, and its GL driver) turns every storage-buffer load into a
//! loop over the SIMD lanes with a bounds check and a branch per lane and component, while a
//! texel fetch is one gather for all lanes. On that driver a matmul whose loads go through a
//! texture runs several times faster, and copying the operand into the texture first is a
//! memcpy. Values are copied bit for bit (rgba32float, read with `textureLoad`: no filtering),
//! so a kernel gives the same results through a mirror as through the buffer.
//!
//! Layout: float `lo + 4 t + c` of the buffer is component c of texel t, and texel t sits at
//! (t mod W, t / W) with W = 2^`width_log2` texels per row (16 to 1024: 256 bytes to 16 KiB).

use std::sync::Arc;

use super::{Gpu, Tensor};

/// log2 of the widest mirror row, in texels.
const MAX_WIDTH_LOG2: u32 = 10;
/// log2 of the narrowest: 16 texels are 256 bytes, the row alignment of buffer-texture copies.
const MIN_WIDTH_LOG2: u32 = 4;

pub struct TexMirror {
    src: Arc<wgpu::Buffer>,
    /// The first float of the buffer the texture holds (a multiple of 4).
    pub lo: usize,
    texels: usize,
    /// log2 of the texels per texture row (what kernels need to find a texel).
    pub width_log2: u32,
    texture: wgpu::Texture,
    pub(crate) view: wgpu::TextureView,
}

impl TexMirror {
    /// The buffer the texture mirrors.
    pub(crate) fn source(&self) -> &Arc<wgpu::Buffer> {
        &self.src
    }

    /// The most floats one mirror holds on `gpu` (its 2-D texture size limit).
    pub fn max_len(gpu: &Gpu) -> usize {
        (4usize << MAX_WIDTH_LOG2) * gpu.device.limits().max_texture_dimension_2d as usize
    }

    /// The mirror of floats `lo..lo + len` of `t`, shared with every other live launch that
    /// mirrors the same range (sharing is safe: each launch records the copy right before it
    /// reads, so the texture holds the buffer's contents of that moment).
    pub fn shared(gpu: &Gpu, t: &Tensor, lo: usize, len: usize) -> Arc<TexMirror> {
        let key = (Arc::as_ptr(&t.buf) as usize, lo, len);
        let mut map = gpu.mirrors.lock().expect("mirror cache poisoned");
        if let Some(m) = map.get(&key).and_then(|w| w.upgrade()) {
            return m;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let m = Arc::new(TexMirror::new(gpu, t, lo, len));
        map.insert(key, Arc::downgrade(&m));
        m
    }

    /// A mirror of floats `lo..lo + len` of `t` (`lo` a multiple of 4); its contents are
    /// written by [`TexMirror::encode_copy`], which the launch using it records first.
    pub fn new(gpu: &Gpu, t: &Tensor, lo: usize, len: usize) -> TexMirror {
        assert!(lo.is_multiple_of(4), "texture mirror: start {lo} is not a multiple of 4");
        assert!(len <= Self::max_len(gpu), "texture mirror: {len} floats exceed the texture limit");
        let texels = len.div_ceil(4).max(1);
        let width_log2 = texels.next_power_of_two().trailing_zeros().clamp(MIN_WIDTH_LOG2, MAX_WIDTH_LOG2);
        let width = 1usize << width_log2;
        let height = texels.div_ceil(width);
        let texture = gpu.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("texture mirror"),
            size: wgpu::Extent3d { width: width as u32, height: height as u32, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        let view = texture.create_view(&Default::default());
        // The copies read whole texels: the buffer must hold them (Tensor rounds its buffers up
        // to 16 bytes for this).
        assert!(
            ((lo + texels * 4) * 4) as u64 <= t.buf.size(),
            "texture mirror: floats {lo}..{} past the end of a {}-byte buffer",
            lo + texels * 4,
            t.buf.size()
        );
        TexMirror { src: t.buf.clone(), lo, texels, width_log2, texture, view }
    }

    /// Records the copy of the buffer range into the texture (whole rows, then the last one).
    pub fn encode_copy(&self, enc: &mut wgpu::CommandEncoder) {
        let width = 1usize << self.width_log2;
        let (rows, rest) = (self.texels / width, self.texels % width);
        let copy = |enc: &mut wgpu::CommandEncoder, row: usize, w: usize, h: usize| {
            enc.copy_buffer_to_texture(
                wgpu::TexelCopyBufferInfo {
                    buffer: &self.src,
                    layout: wgpu::TexelCopyBufferLayout {
                        offset: (self.lo * 4 + row * width * 16) as u64,
                        bytes_per_row: (h > 1).then_some((width * 16) as u32),
                        rows_per_image: None,
                    },
                },
                wgpu::TexelCopyTextureInfo {
                    texture: &self.texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d { x: 0, y: row as u32, z: 0 },
                    aspect: wgpu::TextureAspect::All,
                },
                wgpu::Extent3d { width: w as u32, height: h as u32, depth_or_array_layers: 1 },
            );
        };
        if rows > 0 {
            copy(enc, 0, width, rows);
        }
        if rest > 0 {
            copy(enc, rows, rest, 1);
        }
    }
}
