//! Swin's own kernels (shaders/window.wgsl) against their CPU references and against timm's
//! definitions written out independently here: the window partition with cyclic shift, the
//! PatchMerging channel order, the relative-position index, the shift mask's regions, the bias
//! table's gradient (finite differences) and mean pooling.

mod common;

use common::{Rng, assert_close, assert_exact, gpu, read, run1, upload1};
use maskaq::gpu::Tensor;
use maskaq::ops::window::{self, MASK_VALUE, RelBias, TokenMap};

/// Image-order tokens whose value encodes (image, y, x, channel).
fn coded(images: usize, grid: usize, d: usize) -> Vec<f32> {
    let mut v = Vec::new();
    for b in 0..images {
        for y in 0..grid {
            for x in 0..grid {
                for c in 0..d {
                    v.push((((b * 100 + y) * 100 + x) * 100 + c) as f32);
                }
            }
        }
    }
    v
}

fn code(b: usize, y: usize, x: usize, c: usize) -> f32 {
    (((b * 100 + y) * 100 + x) * 100 + c) as f32
}

/// timm: roll by (-shift, -shift), then window u = wy (R / w) + wx of each image (batch-major),
/// token t = ty w + tx, reads image position ((w wy + ty + shift) % R, (w wx + tx + shift) % R).
#[test]
fn window_partition_follows_timms_roll_and_partition() {
    let g = gpu();
    for (images, grid, w, shift, d) in [(2, 14, 7, 3, 3), (3, 12, 4, 2, 2), (1, 8, 8, 0, 5), (2, 6, 3, 1, 1)]
    {
        let map = TokenMap::windows(images, grid, w, shift, d);
        let x = coded(images, grid, d);
        let mut want = vec![0.0; x.len()];
        let nw = grid / w;
        for b in 0..images {
            for wy in 0..nw {
                for wx in 0..nw {
                    for ty in 0..w {
                        for tx in 0..w {
                            let row = ((b * nw * nw + wy * nw + wx) * w + ty) * w + tx;
                            let (y, xx) = ((w * wy + ty + shift) % grid, (w * wx + tx + shift) % grid);
                            for c in 0..d {
                                want[row * d + c] = code(b, y, xx, c);
                            }
                        }
                    }
                }
            }
        }
        let mut cpu = vec![0.0; x.len()];
        map.cpu(&x, &mut cpu, 1.0, 0.0);
        assert_exact("cpu to windows", &cpu, &want);
        let (src, dst, back) =
            (upload1(&g, &x), upload1(&g, &vec![0.0; x.len()]), upload1(&g, &vec![0.0; x.len()]));
        run1(&g, &map.dispatch(&g, &src, &dst, 1.0, 0.0));
        assert_exact("gpu to windows", &read(&g, &dst), &want);
        run1(&g, &map.inverse().dispatch(&g, &dst, &back, 1.0, 0.0));
        assert_exact("gpu round trip", &read(&g, &back), &x);
    }
}

/// Reduction input channel q·C + c of merged token (i, j) reads x[2i + dh, 2j + dw, c] with
/// q = 2 dw + dh: (0,0), (1,0), (0,1), (1,1).
#[test]
fn patch_merging_channel_order_is_timms() {
    let g = gpu();
    let (images, grid, d) = (2, 6, 3);
    let x = coded(images, grid, d);
    let h = grid / 2;
    let mut want = Vec::new();
    for b in 0..images {
        for i in 0..h {
            for j in 0..h {
                for (dh, dw) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    for c in 0..d {
                        want.push(code(b, 2 * i + dh, 2 * j + dw, c));
                    }
                }
            }
        }
    }
    let map = TokenMap::merge(images, grid, d);
    let (src, dst, back) =
        (upload1(&g, &x), upload1(&g, &vec![0.0; x.len()]), upload1(&g, &vec![0.0; x.len()]));
    run1(&g, &map.dispatch(&g, &src, &dst, 1.0, 0.0));
    assert_exact("merge", &read(&g, &dst), &want);
    run1(&g, &map.inverse().dispatch(&g, &dst, &back, 1.0, 0.0));
    assert_exact("unmerge", &read(&g, &back), &x);
}

#[test]
fn token_map_scales_and_accumulates() {
    let g = gpu();
    let mut rng = Rng::new(3);
    let map = TokenMap::windows(2, 10, 5, 2, 3);
    let (x, y0) = (rng.vec(map.numel(), 1.0), rng.vec(map.numel(), 1.0));
    let mut want = y0.clone();
    map.cpu(&x, &mut want, 0.5, 1.0);
    let (src, dst) = (upload1(&g, &x), upload1(&g, &y0));
    run1(&g, &map.dispatch(&g, &src, &dst, 0.5, 1.0));
    assert_close("alpha x + y", &read(&g, &dst), &want, 1e-6, 0.0, 1e-6);
}

/// timm's relative_position_index for window 7 (docs/swin.md).
#[test]
fn relative_position_index_matches_timm() {
    let rb = RelBias { groups: 1, heads: 1, window: 7, grid: 7, shift: 0 };
    assert_eq!(rb.rel_index(0, 1), 83);
    assert_eq!(rb.rel_index(1, 0), 85);
    assert_eq!(rb.rel_index(0, 48), 0);
    assert_eq!(rb.rel_index(48, 0), 168);
    assert!((0..49).all(|i| rb.rel_index(i, i) == 84));
}

/// Windows holding more than one shift region at 224 px with window 7: 15 of 64, 7 of 16, 3 of
/// 4; the last window holds four regions.
#[test]
fn shift_mask_regions_match_timm() {
    for (grid, mixed) in [(56, 15), (28, 7), (14, 3)] {
        let rb = RelBias { groups: 1, heads: 1, window: 7, grid, shift: 3 };
        let windows = (grid / 7) * (grid / 7);
        let count = (0..windows)
            .filter(|&u| (0..49).any(|i| (0..49).any(|j| rb.mask(u, i, j) == MASK_VALUE)))
            .count();
        assert_eq!(count, mixed, "grid {grid}");
        // Regions of the last window: the mask splits its tokens into four groups.
        let last = windows - 1;
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in 0..49 {
            match groups.iter_mut().find(|gr| rb.mask(last, gr[0], i) == 0.0) {
                Some(gr) => gr.push(i),
                None => groups.push(vec![i]),
            }
        }
        assert_eq!(groups.len(), 4, "grid {grid}: regions in the last window");
    }
}

fn rel_bias_case(rb: RelBias, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let n = rb.window * rb.window;
    let a = rng.vec(rb.groups * rb.heads * n * n, 2.0);
    let table = rng.vec((2 * rb.window - 1).pow(2) * rb.heads, 1.0);
    (a, table)
}

#[test]
fn rel_bias_forward_and_table_grad_match_cpu() {
    let g = gpu();
    for (i, rb) in [
        RelBias { groups: 8, heads: 3, window: 3, grid: 6, shift: 1 },
        RelBias { groups: 5, heads: 2, window: 4, grid: 8, shift: 2 },
        RelBias { groups: 2, heads: 5, window: 7, grid: 7, shift: 0 },
    ]
    .into_iter()
    .enumerate()
    {
        let (a, table) = rel_bias_case(rb, i as u64);
        let (ta, tt, ts) = (upload1(&g, &a), upload1(&g, &table), upload1(&g, &vec![0.0; a.len()]));
        run1(&g, &rb.forward(&g, &ta, &tt, &ts));
        assert_close("rel_bias forward", &read(&g, &ts), &rb.cpu_forward(&a, &table), 1e-6, 1e-5, 1e-6);
        let dt = Tensor::zeros(&g, &[table.len()]);
        common::run_all(&g, &rb.table_grad(&g, &ta, &dt));
        let want = rb.cpu_table_grad(&a);
        assert_close("table grad", &read(&g, &dt), &want, 1e-5, 1e-4, 1e-5);
    }
}

/// d/dtable of J = Σ c · (a + bias(table) + mask), by central differences of the CPU forward.
#[test]
fn table_grad_matches_finite_differences() {
    let rb = RelBias { groups: 4, heads: 2, window: 3, grid: 6, shift: 1 };
    let (a, mut table) = rel_bias_case(rb, 9);
    let c = Rng::new(10).vec(a.len(), 1.0);
    let j =
        |t: &[f32]| -> f64 { rb.cpu_forward(&a, t).iter().zip(&c).map(|(s, c)| *s as f64 * *c as f64).sum() };
    let grad = rb.cpu_table_grad(&c);
    let h = 1e-2f32;
    for k in 0..table.len() {
        let v = table[k];
        table[k] = v + h;
        let up = j(&table);
        table[k] = v - h;
        let down = j(&table);
        table[k] = v;
        let fd = (up - down) / (2.0 * h as f64);
        assert!(
            (fd - grad[k] as f64).abs() <= 1e-3 * (1.0 + fd.abs()),
            "table[{k}]: fd {fd}, grad {}",
            grad[k]
        );
    }
}

#[test]
fn mean_tokens_matches_cpu() {
    let g = gpu();
    let (images, tokens, d) = (3, 49, 5);
    let x = Rng::new(4).vec(images * tokens * d, 1.0);
    let (tx, ty) = (upload1(&g, &x), Tensor::zeros(&g, &[images * d]));
    run1(&g, &window::mean_tokens(&g, images, tokens, d, &tx, &ty));
    assert_close("mean", &read(&g, &ty), &window::cpu_mean_tokens(images, tokens, d, &x), 1e-6, 1e-6, 1e-6);
}
