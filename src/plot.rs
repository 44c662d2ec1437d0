//! Pictures for people: line charts as PNG (the loss and accuracy curves of a run) and text on
//! images (the labels of the contact sheets).
//!
//! `plotters` draws the charts' frame, grid, ticks and lines. All text — titles, tick values,
//! axis names, legends, labels — is DejaVu Sans embedded in the binary (`assets/fonts/`, with its
//! licence), rasterised here with `ab_glyph`: no system fonts (plotters' `ttf` feature looks them
//! up through fontconfig, which a machine may lack or fill with other fonts), so the pictures
//! are the same everywhere. The text is not left to plotters' own `ab_glyph` backend because
//! plotters 0.3.7 drops each glyph's left side bearing there, which puts letters such as "l" off
//! their place ("Ankl e boot"); plotters still gets the font registered, as its mesh code asks
//! for one even for the empty tick labels it is given.

use std::ops::Range;
use std::path::Path;
use std::sync::{Once, OnceLock};

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use anyhow::{Result, anyhow};
use image::{Rgb, RgbImage};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::maskaq::pipeline::EpochReport;

/// Series colours, in order (series first, then reference lines).
pub const COLOURS: [[u8; 3]; 6] =
    [[31, 119, 180], [214, 39, 40], [44, 160, 44], [255, 127, 14], [148, 103, 189], [23, 190, 207]];

/// Colour of all text, axes and frames.
pub const TEXT: [u8; 3] = [0, 0, 0];

/// Chart size in pixels.
pub const CHART_SIZE: (u32, u32) = (800, 480);

static FONT_DATA: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    // A fixed file compiled in and read by every picture test: it cannot fail at run time.
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_DATA).expect("assets/fonts/DejaVuSans.ttf parses"))
}

/// plotters' `ab_glyph` backend finds fonts only in its own table; it asks for the family
/// "sans-serif" by default.
fn register_plotters_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT_DATA).is_err() {
            panic!("the embedded font assets/fonts/DejaVuSans.ttf does not parse");
        }
    });
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("cannot draw the picture: {e:?}")
}

// --- Text -------------------------------------------------------------------------------

/// Where a text's anchor point lies on its box, along and across the line.
#[derive(Clone, Copy, PartialEq)]
enum Align {
    Start,
    Middle,
    End,
}

/// One line of text anchored at (x, y); `vertical` turns it to read upwards (a y-axis name).
struct Text {
    text: String,
    x: i32,
    y: i32,
    size: f32,
    along: Align,
    across: Align,
    vertical: bool,
}

/// Width in pixels of `text` at `size` (advances and kerning).
pub fn text_width(text: &str, size: f32) -> f32 {
    let f = font().as_scaled(PxScale::from(size));
    let mut prev = None;
    let mut w = 0.0;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            w += f.kern(p, id);
        }
        w += f.h_advance(id);
        prev = Some(id);
    }
    w
}

fn offset(a: Align, len: f32) -> f32 {
    match a {
        Align::Start => 0.0,
        Align::Middle => -len / 2.0,
        Align::End => -len,
    }
}

/// Rasterises `t` onto `img` in [`TEXT`] colour, blending by glyph coverage; what falls
/// outside the image is dropped.
fn draw_text(img: &mut RgbImage, t: &Text) {
    let scale = PxScale::from(t.size);
    let f = font().as_scaled(scale);
    let along0 = offset(t.along, text_width(&t.text, t.size));
    let across0 = offset(t.across, f.ascent() - f.descent());
    let (w, h) = (img.width() as i32, img.height() as i32);
    let mut pen = along0;
    let mut prev = None;
    for c in t.text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            pen += f.kern(p, id);
        }
        prev = Some(id);
        let glyph = id.with_scale_and_position(scale, point(pen, across0 + f.ascent()));
        pen += f.h_advance(id);
        let Some(outline) = f.outline_glyph(glyph) else { continue };
        let b = outline.px_bounds();
        outline.draw(|gx, gy, cover| {
            // (u, v): pixel along and across the line, from the anchor.
            let (u, v) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
            let (x, y) = if t.vertical { (t.x + v, t.y - u) } else { (t.x + u, t.y + v) };
            if x >= 0 && y >= 0 && x < w && y < h {
                let px = img.get_pixel_mut(x as u32, y as u32);
                let a = cover.clamp(0.0, 1.0);
                for (ch, ink) in px.0.iter_mut().zip(TEXT) {
                    *ch = (*ch as f32 * (1.0 - a) + ink as f32 * a).round() as u8;
                }
            }
        });
    }
}

/// A line of text to draw on an image: its top-left corner, the widest it may be (longer text
/// is cut and ends in "…") and its size in pixels.
pub struct Label {
    pub x: i32,
    pub y: i32,
    pub max_width: u32,
    pub size: u32,
    pub text: String,
}

/// Draws `labels` in [`TEXT`] colour on `img`.
pub fn draw_labels(img: &mut RgbImage, labels: &[Label]) {
    for l in labels {
        let size = l.size as f32;
        let fits = |t: &str| text_width(t, size) <= l.max_width as f32;
        let mut text = l.text.clone();
        if !fits(&text) {
            let mut chars: Vec<char> = text.chars().collect();
            while !chars.is_empty() && !fits(&format!("{}…", chars.iter().collect::<String>())) {
                chars.pop();
            }
            text = format!("{}…", chars.iter().collect::<String>());
        }
        let t =
            Text { text, x: l.x, y: l.y, size, along: Align::Start, across: Align::Start, vertical: false };
        draw_text(img, &t);
    }
}

/// Encodes `img` as PNG and writes it atomically.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)?;
    crate::io::write_atomic(path, &bytes)
}

// --- Line charts --------------------------------------------------------------------------

/// One curve: (x, y) points, drawn in order; a non-finite value breaks the line.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// A line chart: a title, axis names, curves and horizontal reference lines (dashed, e.g. the
/// accuracy of a baseline), each named in the legend under the plot.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<Series<'a>>,
    pub references: Vec<(&'a str, f64)>,
}

const TITLE_PX: f32 = 22.0;
const AXIS_NAME_PX: f32 = 16.0;
const TICK_PX: f32 = 14.0;
const LEGEND_PX: f32 = 15.0;
const LEGEND_ROW: u32 = 24;
const LEGEND_LEFT: i32 = 84;
const SWATCH: i32 = 30;

/// Writes `chart` as a [`CHART_SIZE`] PNG. The axes span every finite value (the x axis the
/// series' points, the y axis the points and the reference lines); where every x is a whole
/// number (epochs, steps) the x ticks are whole numbers too.
pub fn line_chart(path: &Path, chart: &Chart) -> Result<()> {
    let (w, h) = CHART_SIZE;
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let texts = draw_chart(&mut img, chart)?;
    for t in &texts {
        draw_text(&mut img, t);
    }
    write_png(path, &img)
}

/// (min, max) of the finite values, `pad` of their span wider on each side; widened where they
/// are equal or absent so an axis never has zero length.
fn span(vals: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi > lo {
        let m = (hi - lo) * pad;
        return (lo - m, hi + m);
    }
    let m = if lo == 0.0 { 1.0 } else { lo.abs() * 0.05 };
    (lo - m, hi + m)
}

/// Ticks on [lo, hi] at a 1-2-5 step, five to ten of them (whole numbers where `whole`), and
/// the decimals that tell them apart.
fn ticks(lo: f64, hi: f64, whole: bool) -> (Vec<f64>, usize) {
    let mut raw = (hi - lo) / 10.0;
    if whole {
        raw = raw.max(1.0);
    }
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let (first, last) = ((lo / step).ceil() as i64, (hi / step).floor() as i64);
    let decimals = (-step.log10().floor()).clamp(0.0, 6.0) as usize;
    ((first..=last).map(|k| k as f64 * step).collect(), decimals)
}

/// A linear f64 axis with the ticks of [`ticks`]: plotters' own picks fractional epochs such
/// as 1.5, and its key-point wrapper loses the f64 value formatter the mesh needs.
struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;
    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range.clone()).map(v, limit)
    }
    fn key_points<H: KeyPointHint>(&self, _: H) -> Vec<f64> {
        self.ticks.clone()
    }
    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// Draws everything but the text with plotters and returns the text to draw over it.
fn draw_chart(img: &mut RgbImage, chart: &Chart) -> Result<Vec<Text>> {
    register_plotters_font();
    let (w, h) = CHART_SIZE;
    let entries: Vec<(&str, bool)> = chart
        .series
        .iter()
        .map(|s| (s.name, false))
        .chain(chart.references.iter().map(|r| (r.0, true)))
        .collect();
    let (legend_pos, rows) = legend_layout(&entries, w as i32);
    let legend_h = if rows == 0 { 0 } else { rows * LEGEND_ROW + 10 };

    let xs = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let whole_x = xs.clone().filter(|x| x.is_finite()).all(|x| x.fract() == 0.0);
    // A little room at the ends so the first and last points are not cut by the frame.
    let (x0, x1) = span(xs, 0.02);
    let ys = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (y0, y1) = span(ys.chain(chart.references.iter().map(|r| r.1)), 0.05);
    let ((x_ticks, x_dec), (y_ticks, y_dec)) = (ticks(x0, x1, whole_x), ticks(y0, y1, false));

    let root = BitMapBackend::with_buffer(img, (w, h)).into_drawing_area();
    let (plot_area, legend_area) = root.split_vertically(h - legend_h);
    let mut cc = ChartBuilder::on(&plot_area)
        .margin(14)
        .margin_top(46)
        .x_label_area_size(50)
        .y_label_area_size(76)
        .build_cartesian_2d(
            Axis { range: x0..x1, ticks: x_ticks.clone() },
            Axis { range: y0..y1, ticks: y_ticks.clone() },
        )
        .map_err(plot_err)?;
    let no_text = |_: &f64| String::new();
    cc.configure_mesh()
        .x_label_formatter(&no_text)
        .y_label_formatter(&no_text)
        .bold_line_style(RGBColor(225, 225, 225))
        .light_line_style(RGBColor(225, 225, 225))
        .axis_style(rgb(TEXT))
        .draw()
        .map_err(plot_err)?;

    for (i, s) in chart.series.iter().enumerate() {
        let style = rgb(COLOURS[i % COLOURS.len()]).stroke_width(2);
        // A line per run of finite points, so a missing value leaves a gap instead of a jump.
        for run in s.points.split(|p| !(p.0.is_finite() && p.1.is_finite())) {
            if !run.is_empty() {
                cc.draw_series(LineSeries::new(run.iter().copied(), style).point_size(3))
                    .map_err(plot_err)?;
            }
        }
    }
    for (j, &(_, v)) in chart.references.iter().enumerate() {
        if v.is_finite() {
            let c = COLOURS[(chart.series.len() + j) % COLOURS.len()];
            cc.draw_series(DashedLineSeries::new([(x0, v), (x1, v)], 9, 6, rgb(c).stroke_width(2)))
                .map_err(plot_err)?;
        }
    }

    let mut texts = axis_texts(&cc, chart, (&x_ticks, x_dec), (&y_ticks, y_dec));
    let legend_top = (h - legend_h) as i32;
    texts.extend(draw_legend(&legend_area, legend_top, &entries, legend_pos)?);
    root.present().map_err(plot_err)?;
    Ok(texts)
}

fn text(text: String, (x, y): (i32, i32), size: f32, along: Align, across: Align) -> Text {
    Text { text, x, y, size, along, across, vertical: false }
}

/// The title, the tick values (`decimals` each) and the axis names around `cc`'s plot.
fn axis_texts(
    cc: &ChartContext<BitMapBackend, Cartesian2d<Axis, Axis>>,
    chart: &Chart,
    (x_ticks, x_dec): (&[f64], usize),
    (y_ticks, y_dec): (&[f64], usize),
) -> Vec<Text> {
    let (px, py) = cc.plotting_area().get_pixel_range();
    let (x0, y0) = (cc.x_range().start, cc.y_range().start);
    let mid_x = (px.start + px.end) / 2;
    let mut texts = vec![text(chart.title.into(), (mid_x, 12), TITLE_PX, Align::Middle, Align::Start)];
    for t in x_ticks {
        let x = cc.backend_coord(&(*t, y0)).0;
        texts.push(text(format!("{t:.x_dec$}"), (x, py.end + 8), TICK_PX, Align::Middle, Align::Start));
    }
    for t in y_ticks {
        let y = cc.backend_coord(&(x0, *t)).1;
        texts.push(text(format!("{t:.y_dec$}"), (px.start - 9, y), TICK_PX, Align::End, Align::Middle));
    }
    texts.push(text(chart.x_label.into(), (mid_x, py.end + 28), AXIS_NAME_PX, Align::Middle, Align::Start));
    let y_name = (10, (py.start + py.end) / 2);
    texts.push(Text {
        vertical: true,
        ..text(chart.y_label.into(), y_name, AXIS_NAME_PX, Align::Middle, Align::Start)
    });
    texts
}

/// Draws each legend entry's sample of its line (dashed for reference lines) at its place from
/// [`legend_layout`] in `area` (which starts `top` pixels down the chart); returns the names to
/// write beside them.
fn draw_legend(
    area: &DrawingArea<BitMapBackend, Shift>,
    top: i32,
    entries: &[(&str, bool)],
    pos: Vec<(i32, u32)>,
) -> Result<Vec<Text>> {
    let mut texts = Vec::new();
    for (k, ((name, dashed), (x, row))) in entries.iter().zip(pos).enumerate() {
        let c = rgb(COLOURS[k % COLOURS.len()]).stroke_width(2);
        let y = (row * LEGEND_ROW + LEGEND_ROW / 2) as i32;
        if *dashed {
            for d in 0..3 {
                let a = x + d * 12;
                area.draw(&PathElement::new([(a, y), (a + 7, y)], c)).map_err(plot_err)?;
            }
        } else {
            area.draw(&PathElement::new([(x, y), (x + SWATCH, y)], c)).map_err(plot_err)?;
            area.draw(&Circle::new((x + SWATCH / 2, y), 3, c.filled())).map_err(plot_err)?;
        }
        texts.push(text(name.to_string(), (x + SWATCH + 8, top + y), LEGEND_PX, Align::Start, Align::Middle));
    }
    Ok(texts)
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Lays the legend's entries (name, dashed) out in rows from the left, within `width`;
/// returns each entry's (x, row) and the number of rows.
fn legend_layout(entries: &[(&str, bool)], width: i32) -> (Vec<(i32, u32)>, u32) {
    let (mut x, mut row, mut pos) = (LEGEND_LEFT, 0u32, Vec::new());
    for (name, _) in entries {
        let item = SWATCH + 8 + text_width(name, LEGEND_PX).ceil() as i32;
        if x > LEGEND_LEFT && x + item > width - 10 {
            (x, row) = (LEGEND_LEFT, row + 1);
        }
        pos.push((x, row));
        x += item + 28;
    }
    (pos, if entries.is_empty() { 0 } else { row + 1 })
}

// --- The curves of a quantize run ------------------------------------------------------

/// How the curves name a synthesis method.
fn method_name(method: &str) -> &str {
    match method {
        "maskaq" => "MaskAQ",
        "mimiq" => "MimiQ",
        "psaq" => "PSAQ",
        m => m,
    }
}

/// The curves of a `quantize` run in `dir`: `curves_loss.png` (the KD and head-distillation
/// losses per epoch) and, where the run was evaluated (`fp_top1` is known),
/// `curves_accuracy.png` (Q's top-1 per epoch against the FP and min-max-PTQ baselines).
/// Returns whether the accuracy chart was written.
pub fn run_curves(
    dir: &Path,
    epochs: &[EpochReport],
    fp_top1: Option<f64>,
    ptq_top1: Option<f64>,
    method: &str,
    bits: &str,
) -> Result<bool> {
    let m = method_name(method);
    let per_epoch = |f: &dyn Fn(&EpochReport) -> f64| -> Vec<(f64, f64)> {
        epochs.iter().map(|e| (e.epoch as f64, f(e))).collect()
    };
    line_chart(
        &dir.join("curves_loss.png"),
        &Chart {
            title: &format!("{m} {bits}: Q training losses"),
            x_label: "epoch",
            y_label: "loss (epoch mean)",
            series: vec![
                Series { name: "KD loss", points: per_epoch(&|e| e.kd as f64) },
                Series { name: "head-distillation loss", points: per_epoch(&|e| e.hd as f64) },
            ],
            references: vec![],
        },
    )?;
    let Some(fp) = fp_top1 else { return Ok(false) };
    let mut references = vec![("FP (top-1 %)", fp)];
    if let Some(ptq) = ptq_top1 {
        references.push(("min-max PTQ (top-1 %)", ptq));
    }
    line_chart(
        &dir.join("curves_accuracy.png"),
        &Chart {
            title: &format!("{m} {bits}: top-1 accuracy on the evaluation data"),
            x_label: "epoch",
            y_label: "top-1 accuracy (%)",
            series: vec![Series {
                name: &format!("{m} Q (top-1 %)"),
                points: per_epoch(&|e| e.top1.unwrap_or(f64::NAN)),
            }],
            references,
        },
    )?;
    Ok(true)
}
