//! The pictures for people: line charts (title, axes, legend) and the labelled contact sheet.
//! No GPU needed.

use std::path::{Path, PathBuf};

use image::RgbImage;
use maskaq::data::synthetic::{self, SHEET_GAP, SHEET_LABEL_H};
use maskaq::maskaq::pipeline::EpochReport;
use maskaq::model::ModelConfig;
use maskaq::plot::{self, CHART_SIZE, COLOURS, Chart, Series};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Copies a picture a test wrote to `$MASKAQ_KEEP_PICTURES/name`, where that is set, to look at.
fn keep(path: &Path, name: &str) {
    if let Some(dir) = std::env::var_os("MASKAQ_KEEP_PICTURES") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(path, Path::new(&dir).join(name)).unwrap();
    }
}

fn open_png(path: &Path) -> RgbImage {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap().to_rgb8()
}

/// Pixels in rows `rows` and columns `cols` that are nearly the text colour (black).
fn dark(img: &RgbImage, cols: std::ops::Range<u32>, rows: std::ops::Range<u32>) -> usize {
    rows.flat_map(|y| cols.clone().map(move |x| (x, y)))
        .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 90))
        .count()
}

/// Pixels of exactly colour `c` (the lines are drawn unblended) in the plot, above the legend
/// (which shows every colour too).
fn of_colour(img: &RgbImage, c: [u8; 3]) -> usize {
    let plot_rows = 40..img.height() - 60;
    img.enumerate_pixels().filter(|(_, y, p)| plot_rows.contains(y) && p.0 == c).count()
}

fn chart<'a>(names: [&'a str; 2], reference: &'a str) -> Chart<'a> {
    Chart {
        title: "Q training losses",
        x_label: "epoch",
        y_label: "loss",
        series: vec![
            Series { name: names[0], points: vec![(1.0, 0.9), (2.0, 0.5), (3.0, 0.4), (4.0, 0.35)] },
            // A missing value breaks the line instead of stopping the chart.
            Series { name: names[1], points: vec![(1.0, 0.2), (2.0, f64::NAN), (3.0, 0.15), (4.0, 0.1)] },
        ],
        references: vec![(reference, 0.6)],
    }
}

#[test]
fn line_chart_has_title_axes_curves_and_legend() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.png");
    plot::line_chart(&a, &chart(["KD loss", "head-distillation loss"], "baseline")).unwrap();
    keep(&a, "line_chart.png");
    let img = open_png(&a);
    let (w, h) = CHART_SIZE;
    assert_eq!(img.dimensions(), (w, h));
    // The title is centred at the top, above the plot.
    assert!(dark(&img, w / 3..2 * w / 3, 0..40) > 100, "no title");
    // The y-axis name reading upwards at the left edge, the tick values between it and the
    // axis (at x = 90), the x tick values and the x-axis name under the plot (which ends
    // 98 px above the bottom: the legend row, margin and tick area).
    assert!(dark(&img, 0..30, 100..h - 100) > 50, "no y-axis name");
    assert!(dark(&img, 40..86, 50..h - 90) > 50, "no y tick values");
    assert!(dark(&img, 90..w, h - 92..h - 74) > 30, "no x tick values");
    assert!(dark(&img, w / 3..2 * w / 3, h - 72..h - 48) > 30, "no x-axis name");
    // The legend under the plot.
    assert!(dark(&img, 100..w, h - 30..h) > 100, "no legend");
    // Each curve and the reference line in its own colour.
    for c in &COLOURS[..3] {
        assert!(of_colour(&img, *c) > 100, "colour {c:?} is missing");
    }
    assert_eq!(of_colour(&img, COLOURS[3]), 0);

    // Text is really drawn with the embedded font: other names give another legend, the
    // same names the same picture.
    let b = dir.path().join("b.png");
    plot::line_chart(&b, &chart(["first", "second"], "other")).unwrap();
    let other = open_png(&b);
    let rows_differ = |y: std::ops::Range<u32>| {
        y.into_iter().any(|y| (0..w).any(|x| img.get_pixel(x, y) != other.get_pixel(x, y)))
    };
    assert!(rows_differ(h - 30..h), "the legend does not depend on the names");
    assert!(!rows_differ(0..40), "the title changed with the legend");
    let again = dir.path().join("again.png");
    plot::line_chart(&again, &chart(["KD loss", "head-distillation loss"], "baseline")).unwrap();
    assert_eq!(open_png(&again), img);
}

#[test]
fn line_chart_survives_degenerate_data() {
    let dir = tempfile::tempdir().unwrap();
    for (i, points) in
        [vec![], vec![(1.0, 5.0)], vec![(1.0, f64::NAN), (2.0, f64::INFINITY)], vec![(0.5, 1.0), (0.75, 1.0)]]
            .into_iter()
            .enumerate()
    {
        let path = dir.path().join(format!("{i}.png"));
        let c = Chart {
            title: "t",
            x_label: "step",
            y_label: "y",
            series: vec![Series { name: "s", points }],
            references: vec![("nan", f64::NAN)],
        };
        plot::line_chart(&path, &c).unwrap();
        assert_eq!(open_png(&path).dimensions(), CHART_SIZE);
    }
}

fn epoch(epoch: usize, top1: Option<f64>) -> EpochReport {
    EpochReport {
        epoch,
        lr: 1e-3,
        updated: true,
        refreshed: epoch == 1,
        kd: 1.0 / epoch as f32,
        hd: 0.2 / epoch as f32,
        top1,
        top5: None,
        synthetic_agreement: None,
        seconds: 1.0,
    }
}

#[test]
fn run_curves_write_the_accuracy_chart_only_with_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let epochs: Vec<EpochReport> = (1..=3).map(|e| epoch(e, Some(80.0 + e as f64))).collect();
    assert!(plot::run_curves(dir.path(), &epochs, Some(89.5), Some(86.1), "maskaq", "W4A4").unwrap());
    for name in ["curves_loss.png", "curves_accuracy.png"] {
        keep(&dir.path().join(name), name);
        let img = open_png(&dir.path().join(name));
        assert_eq!(img.dimensions(), CHART_SIZE);
        assert!(dark(&img, 0..CHART_SIZE.0, 0..40) > 100, "{name}: no title");
    }
    // Q's curve and the FP and PTQ lines.
    let acc = open_png(&dir.path().join("curves_accuracy.png"));
    for c in &COLOURS[..3] {
        assert!(of_colour(&acc, *c) > 100, "curves_accuracy.png: colour {c:?} is missing");
    }

    let none = tempfile::tempdir().unwrap();
    let epochs: Vec<EpochReport> = (1..=2).map(|e| epoch(e, None)).collect();
    assert!(!plot::run_curves(none.path(), &epochs, None, None, "mimiq", "W3A3").unwrap());
    assert!(none.path().join("curves_loss.png").is_file());
    assert!(!none.path().join("curves_accuracy.png").exists());
}

fn tiny_cfg(names: Option<&[&str]>) -> ModelConfig {
    let mut cfg = ModelConfig::from_json_file(&fixtures().join("tiny_gray_f16/config.json")).unwrap();
    cfg.label_names = names.map(|n| n.iter().map(|s| s.to_string()).collect());
    cfg
}

#[test]
fn contact_sheet_names_each_image_under_it() {
    // Nine 28-px images, classes 0..8: a 3 x 3 grid of 112-px cells (28 px times 4).
    let cfg = tiny_cfg(None);
    let per = 28 * 28;
    let images: Vec<f32> = (0..9 * per).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
    let labels: Vec<usize> = (0..9).collect();
    let plain = tempfile::tempdir().unwrap();
    synthetic::write_previews(plain.path(), &images, &labels, &cfg).unwrap();
    let sheet = open_png(&plain.path().join("contact_sheet.png"));
    let cell = 112;
    assert!(cell >= synthetic::SHEET_CELL_MIN as u32);
    let step_y = cell + SHEET_LABEL_H + SHEET_GAP;
    assert_eq!(sheet.dimensions(), (3 * (cell + SHEET_GAP) + SHEET_GAP, 3 * step_y + SHEET_GAP));
    // Each cell is its preview upscaled 4x (nearest neighbour).
    let preview = open_png(&plain.path().join("previews/00004.png"));
    let (x4, y4) = (SHEET_GAP + (cell + SHEET_GAP), SHEET_GAP + step_y);
    for (x, y) in [(0, 0), (27, 27), (13, 5)] {
        assert_eq!(sheet.get_pixel(x4 + 4 * x + 3, y4 + 4 * y + 1), preview.get_pixel(x, y));
    }
    // Text in every label strip, none in the gaps beside it.
    for i in 0..9 {
        let (x, y) = (SHEET_GAP + (i % 3) * (cell + SHEET_GAP), SHEET_GAP + (i / 3) * step_y + cell);
        assert!(dark(&sheet, x..x + cell, y..y + SHEET_LABEL_H) > 20, "no label under image {i}");
        assert_eq!(dark(&sheet, x + cell..x + cell + SHEET_GAP, y..y + SHEET_LABEL_H), 0);
    }

    // With label_names the strips show the names: other text, same images.
    let names = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ];
    let named = tempfile::tempdir().unwrap();
    synthetic::write_previews(named.path(), &images, &labels, &tiny_cfg(Some(&names))).unwrap();
    keep(&named.path().join("contact_sheet.png"), "contact_sheet_named.png");
    let with_names = open_png(&named.path().join("contact_sheet.png"));
    assert_eq!(with_names.dimensions(), sheet.dimensions());
    let strip_differs = |a: &RgbImage, b: &RgbImage, y0: u32| {
        (y0..y0 + SHEET_LABEL_H).any(|y| (0..a.width()).any(|x| a.get_pixel(x, y) != b.get_pixel(x, y)))
    };
    assert!(strip_differs(&sheet, &with_names, SHEET_GAP + cell), "names are not drawn");
    assert!(!strip_differs(&sheet, &with_names, SHEET_GAP), "the images changed");
}

#[test]
fn contact_sheet_labels_are_names_or_indices_and_fit_their_cell() {
    let names: Vec<String> = ["T-shirt/top", "Trouser"].iter().map(|s| s.to_string()).collect();
    assert_eq!(synthetic::class_label(1, Some(&names)), "Trouser");
    assert_eq!(synthetic::class_label(7, None), "class 7");
    // A config's names cover every class; past them (another model's set) the index stands.
    assert_eq!(synthetic::class_label(5, Some(&names)), "class 5");

    // A name far wider than the cell is cut, not drawn over the next cell.
    let long = "a class name much longer than any cell of the sheet could hold";
    let cfg = tiny_cfg(Some(&[long; 10]));
    let images = vec![0.5f32; 2 * 28 * 28];
    let dir = tempfile::tempdir().unwrap();
    synthetic::write_previews(dir.path(), &images, &[0, 0], &cfg).unwrap();
    keep(&dir.path().join("contact_sheet.png"), "contact_sheet_long.png");
    let sheet = open_png(&dir.path().join("contact_sheet.png"));
    let (cell, y) = (112, SHEET_GAP + 112);
    assert!(dark(&sheet, SHEET_GAP..SHEET_GAP + cell, y..y + SHEET_LABEL_H) > 20);
    let gap = SHEET_GAP + cell..SHEET_GAP + cell + SHEET_GAP;
    assert_eq!(dark(&sheet, gap, y..y + SHEET_LABEL_H), 0, "the label runs into the next cell");
}

#[test]
fn bundled_model_names_its_classes() {
    let cfg = ModelConfig::from_json_file(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/fashion_vit/config.json"),
    )
    .unwrap();
    let names = cfg.label_names.expect("assets/fashion_vit/config.json has label_names");
    assert_eq!(names.len(), 10);
    assert_eq!((names[0].as_str(), names[9].as_str()), ("T-shirt/top", "Ankle boot"));
}

#[test]
fn labels_are_as_wide_as_their_text() {
    // Each glyph sits at its own left side bearing: text drawn without it (as plotters 0.3.7's
    // ab_glyph backend does) has its letters shifted and its ink narrower than its advance.
    let text = "Ankle boot, Pullover, T-shirt/top";
    let mut img = RgbImage::from_pixel(400, 30, image::Rgb([255, 255, 255]));
    let label = plot::Label { x: 10, y: 5, max_width: 380, size: 14, text: text.into() };
    plot::draw_labels(&mut img, &[label]);
    let inked: Vec<u32> = (0..400).filter(|&x| (0..30).any(|y| img.get_pixel(x, y).0[0] < 160)).collect();
    let (first, last) = (inked[0], *inked.last().unwrap());
    let width = plot::text_width(text, 14.0);
    // "A" starts at the pen, "p" ends about a pixel before its advance.
    assert!(first.abs_diff(10) <= 1, "ink starts at {first}");
    assert!((last as f32 - (10.0 + width)).abs() <= 2.5, "ink ends at {last}, advance {}", 10.0 + width);
}
