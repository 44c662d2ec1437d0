//! A small seeded RNG (SplitMix64) whose streams are identical on every platform, so that a
//! seed always gives the same weights, noise and augmentation draws.

#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x6a09_e667_f3bc_c908)
    }

    /// An independent stream for one item of a run (a synthesis batch, an attempt at it): the
    /// same `seed` and `path` give the same stream whatever else the run did before, so a batch's
    /// draws do not depend on which adapter, shard or order produced it.
    pub fn derive(seed: u64, path: &[u64]) -> Rng {
        let mut r = Rng::new(seed);
        for &k in path {
            // One SplitMix64 output of (state + k) becomes the next state: distinct paths give
            // unrelated streams, and [a, b] differs from [b, a].
            r = Rng(r.0.wrapping_add(k.wrapping_mul(0xd1b5_4a32_d192_ed03)));
            r = Rng(r.next_u64());
        }
        r
    }

    /// The internal state, to checkpoint a run.
    pub fn state(&self) -> u64 {
        self.0
    }

    /// Restores a state from [`Rng::state`].
    pub fn from_state(state: u64) -> Rng {
        Rng(state)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// Normal truncated to +-2 standard deviations (timm's trunc_normal_ init).
    pub fn trunc_normal(&mut self, std: f64) -> f64 {
        loop {
            let v = self.normal();
            if v.abs() <= 2.0 {
                return v * std;
            }
        }
    }
}
