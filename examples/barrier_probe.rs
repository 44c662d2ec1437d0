//! Probe: what a dependency between two launches costs on this adapter. Times one pass of N
//! small `fill` launches, all into one buffer (wgpu puts a barrier between each pair, as a
//! buffer bound read_write twice in a row must have) against N launches into N buffers (no
//! barrier needed). `cargo run --release --example barrier_probe`.

use maskaq::gpu::{Gpu, GpuOptions, Tensor};
use maskaq::ops::copy::fill;

fn main() {
    let gpu = Gpu::new(&GpuOptions::default()).unwrap();
    println!("{}", gpu.describe());
    const N: usize = 200;
    for elems in [256usize, 16384] {
        let one = Tensor::zeros(&gpu, &[elems]);
        let many: Vec<Tensor> = (0..N).map(|_| Tensor::zeros(&gpu, &[elems])).collect();
        let same: Vec<_> = (0..N).map(|i| fill(&gpu, &one, i as f32)).collect();
        let apart: Vec<_> = many.iter().enumerate().map(|(i, t)| fill(&gpu, t, i as f32)).collect();
        for _ in 0..3 {
            let (w1, g1) = gpu.timed_run(&same.iter().collect::<Vec<_>>()).unwrap();
            let (w2, g2) = gpu.timed_run(&apart.iter().collect::<Vec<_>>()).unwrap();
            let (t1, t2) = (g1.unwrap_or(w1), g2.unwrap_or(w2));
            println!(
                "{N} fills of {elems} floats: one buffer {:.3} ms, {N} buffers {:.3} ms: {:.1} us per barrier",
                t1 * 1e3,
                t2 * 1e3,
                (t1 - t2) / N as f64 * 1e6
            );
        }
    }
}
