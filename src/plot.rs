//! Minimal line charts as PNG (loss and accuracy curves of a run): axes, a light grid, one
//! polyline per series. No text rendering: the series' names, colours and ranges are written to
//! the report beside the picture.

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};

/// Series colours, in order.
pub const COLOURS: [[u8; 3]; 6] =
    [[31, 119, 180], [214, 39, 40], [44, 160, 44], [255, 127, 14], [148, 103, 189], [23, 190, 207]];

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), c: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x.round() as i64 + dx, y.round() as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, c);
            }
        }
    }
}

/// Plots every series (x = its index) on common axes spanning all finite values; returns
/// the (min, max) of the y axis.
pub fn line_chart(path: &Path, series: &[Vec<f64>]) -> Result<(f64, f64)> {
    let (w, h, m) = (640u32, 360u32, 24.0);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let vals = series.iter().flatten().filter(|v| v.is_finite());
    let lo = vals.clone().cloned().fold(f64::INFINITY, f64::min);
    let hi = vals.cloned().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) =
        if lo.is_finite() { if hi > lo { (lo, hi) } else { (lo - 1.0, hi + 1.0) } } else { (0.0, 1.0) };
    let n = series.iter().map(Vec::len).max().unwrap_or(1).max(2);
    let (pw, ph) = (w as f64 - 2.0 * m, h as f64 - 2.0 * m);
    let px = |i: usize| m + pw * i as f64 / (n - 1) as f64;
    let py = |v: f64| m + ph * (1.0 - (v - lo) / (hi - lo));
    for k in 0..=4 {
        let y = m + ph * k as f64 / 4.0;
        line(&mut img, (m, y), (m + pw, y), Rgb([225, 225, 225]));
    }
    line(&mut img, (m, m), (m, m + ph), Rgb([0, 0, 0]));
    line(&mut img, (m, m + ph), (m + pw, m + ph), Rgb([0, 0, 0]));
    for (s, ys) in series.iter().enumerate() {
        let c = Rgb(COLOURS[s % COLOURS.len()]);
        let pts: Vec<(f64, f64)> =
            ys.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| (px(i), py(v))).collect();
        for p in pts.windows(2) {
            line(&mut img, p[0], p[1], c);
        }
        if pts.len() == 1 {
            line(&mut img, pts[0], (pts[0].0 + 2.0, pts[0].1), c);
        }
    }
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    crate::io::write_atomic(path, &bytes)?;
    Ok((lo, hi))
}
