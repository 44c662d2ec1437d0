//! timm's evaluation transform, reproduced to the byte:
//! `Resize(floor(size / crop_pct), bicubic)` on the shorter side, `CenterCrop(size)`, `ToTensor`,
//! `Normalize(mean, std)`. The resize follows Pillow's antialiased resampling for 8-bit images
//! (separable, horizontal pass then vertical, filter support scaled by the downscale factor,
//! 22-bit fixed-point coefficients, results clipped to u8 after each pass), because that is
//! what torchvision applies to the PIL images timm loads.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::model::config::Preprocess;

/// An 8-bit image, `chans` interleaved channels (1 or 3).
#[derive(Clone, Debug)]
pub struct Image8 {
    pub w: usize,
    pub h: usize,
    pub chans: usize,
    pub data: Vec<u8>,
}

/// Decodes an image file to 8-bit RGB (chans = 3) or luminance (chans = 1, Pillow's `convert("L")`).
pub fn load_image(path: &Path, chans: usize) -> Result<Image8> {
    let img = image::ImageReader::open(path)
        .with_context(|| format!("{}: cannot open", path.display()))?
        .with_guessed_format()
        .with_context(|| format!("{}: cannot read", path.display()))?
        .decode()
        .map_err(|e| anyhow::anyhow!("{}: not a readable image ({e})", path.display()))?;
    // timm reads images with Pillow, which clips 16-bit samples and converts CMYK its own way;
    // any conversion here would give the model other pixels than timm does, so say so instead.
    if img.color().bits_per_pixel() / u16::from(img.color().channel_count()) > 8 {
        bail!(
            "{}: a {:?} image ({} bits per sample); maskaq reads 8-bit images as timm does: convert it \
             to 8-bit first",
            path.display(),
            img.color(),
            img.color().bits_per_pixel() / u16::from(img.color().channel_count())
        );
    }
    if jpeg_components(path) == Some(4) {
        bail!(
            "{}: a CMYK JPEG; convert it to RGB first (timm's and maskaq's CMYK conversions differ)",
            path.display()
        );
    }
    let rgb = img.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let data = match chans {
        3 => rgb.into_raw(),
        1 => rgb
            .pixels()
            .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
            .collect(),
        c => bail!("models with {c} input channels take no image files (1 or 3 channels only)"),
    };
    Ok(Image8 { w, h, chans, data })
}

/// The number of colour components of a JPEG file (4 for CMYK), from its start-of-frame
/// header; `None` for other files.
fn jpeg_components(path: &Path) -> Option<u8> {
    let bytes = std::fs::read(path).ok()?;
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut i = 2;
    while i + 9 < bytes.len() {
        if bytes[i] != 0xFF {
            return None;
        }
        let marker = bytes[i + 1];
        let len = u16::from_be_bytes([bytes[i + 2], bytes[i + 3]]) as usize;
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker) {
            return Some(bytes[i + 9]);
        }
        i += 2 + len;
    }
    None
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's per-output-pixel windows and fixed-point weights for resizing `in_size` -> `out_size`.
fn coefficients(
    in_size: usize,
    out_size: usize,
    filter: fn(f64) -> f64,
    support: f64,
) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax).map(|x| filter((x as f64 - center + 0.5) * ss)).collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let fixed = k
                .iter()
                .map(|&v| {
                    let s = v * (1u32 << PRECISION_BITS) as f64;
                    (if s < 0.0 { s - 0.5 } else { s + 0.5 }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow-exact resize of an 8-bit image (bicubic or bilinear).
pub fn resize(img: &Image8, w: usize, h: usize, interpolation: &str) -> Image8 {
    let (filter, support): (fn(f64) -> f64, f64) = match interpolation {
        "bilinear" => (bilinear, 1.0),
        _ => (bicubic, 2.0),
    };
    let c = img.chans;
    let mut tmp = img.clone();
    if w != img.w {
        let cx = coefficients(img.w, w, filter, support);
        let mut out = vec![0u8; w * img.h * c];
        for y in 0..img.h {
            for (x, (xmin, k)) in cx.iter().enumerate() {
                for ch in 0..c {
                    let mut s: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &kv) in k.iter().enumerate() {
                        s += img.data[(y * img.w + xmin + i) * c + ch] as i64 * kv as i64;
                    }
                    out[(y * w + x) * c + ch] = clip8(s);
                }
            }
        }
        tmp = Image8 { w, h: img.h, chans: c, data: out };
    }
    if h != img.h {
        let cy = coefficients(img.h, h, filter, support);
        let mut out = vec![0u8; w * h * c];
        for (y, (ymin, k)) in cy.iter().enumerate() {
            for x in 0..w {
                for ch in 0..c {
                    let mut s: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &kv) in k.iter().enumerate() {
                        s += tmp.data[((ymin + i) * w + x) * c + ch] as i64 * kv as i64;
                    }
                    out[(y * w + x) * c + ch] = clip8(s);
                }
            }
        }
        tmp = Image8 { w, h, chans: c, data: out };
    }
    tmp
}

/// timm's eval transform: returns a [C, size, size] tensor (CHW, normalised).
pub fn eval_transform(img: &Image8, pp: &Preprocess) -> Vec<f32> {
    let [chans, th, tw] = pp.input_size;
    assert_eq!(img.chans, chans, "image channels must match the model");
    let scale_size = (th.max(tw) as f64 / pp.crop_pct as f64).floor() as usize;
    // torchvision Resize(int): the shorter side becomes scale_size, the longer keeps the aspect.
    let (nw, nh) = if img.w <= img.h {
        (scale_size, (scale_size as f64 * img.h as f64 / img.w as f64) as usize)
    } else {
        ((scale_size as f64 * img.w as f64 / img.h as f64) as usize, scale_size)
    };
    let resized =
        if (nw, nh) == (img.w, img.h) { img.clone() } else { resize(img, nw, nh, &pp.interpolation) };
    // CenterCrop: round((in - out) / 2), padding with zeros if the image is smaller.
    let top = ((nh as f64 - th as f64) / 2.0).round() as i64;
    let left = ((nw as f64 - tw as f64) / 2.0).round() as i64;
    let mut out = vec![0f32; chans * th * tw];
    for c in 0..chans {
        for y in 0..th {
            for x in 0..tw {
                let (sy, sx) = (y as i64 + top, x as i64 + left);
                let v = if sy >= 0 && sx >= 0 && (sy as usize) < nh && (sx as usize) < nw {
                    resized.data[(sy as usize * nw + sx as usize) * chans + c] as f32 / 255.0
                } else {
                    0.0
                };
                out[(c * th + y) * tw + x] = (v - pp.mean[c]) / pp.std[c];
            }
        }
    }
    out
}
