//! timm's eval transform (PIL bicubic resize, center crop, normalise) against the tensors timm
//! produced for the same PNG files (tools/make_fixtures.py, tests/fixtures/preprocess).

use std::path::Path;

use maskaq::data::preprocess::{eval_transform, load_image};
use maskaq::model::checkpoint::read_f32_tensors;
use maskaq::model::config::Preprocess;

#[test]
fn eval_transform_matches_timm() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess");
    let want = read_f32_tensors(&dir.join("preprocess.safetensors")).unwrap();
    let cases = [
        ("img0", 3, 32, vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
        ("img1", 3, 32, vec![0.485, 0.456, 0.406], vec![0.229, 0.224, 0.225]),
        ("img2", 1, 28, vec![0.286], vec![0.353]),
    ];
    for (name, chans, size, mean, std) in cases {
        let pp = Preprocess {
            input_size: [chans, size, size],
            mean,
            std: std.clone(),
            crop_pct: 0.875,
            interpolation: "bicubic".into(),
        };
        let img = load_image(&dir.join(format!("{name}.png")), chans).unwrap();
        let got = eval_transform(&img, &pp);
        let (shape, want) = &want[name];
        assert_eq!(shape, &vec![chans, size, size]);
        // One u8 step after normalisation is 1/255/std; demand agreement far below it.
        let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}: max abs difference {worst} from timm's transform");
    }
}
