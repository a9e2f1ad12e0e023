//! Seeded randomness for the plant benchmarks (splitmix64): a sequence that lays out a house's
//! and the sky's events, and keyed noise that every controller in one run sees the same (a
//! function of the time step, not of how often it was asked for).

/// A splitmix64 sequence.
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in `low..high`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * unit(self.next_u64())
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The top 53 bits as a fraction in `0..1`.
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Noise in `-amplitude..amplitude`, a function of `key` (and `salt`, one per quantity).
pub fn keyed_noise(key: u64, salt: u64, amplitude: f64) -> f64 {
    amplitude * (2.0 * unit(mix(key ^ salt.wrapping_mul(0x2545_f491_4f6c_dd1d))) - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_and_bounded() {
        let (mut a, mut b) = (SplitMix(7), SplitMix(7));
        for _ in 0..1000 {
            let x = a.uniform(2.0, 6.0);
            assert_eq!(x, b.uniform(2.0, 6.0));
            assert!((2.0..6.0).contains(&x));
        }
        assert_eq!(keyed_noise(5, 1, 10.0), keyed_noise(5, 1, 10.0));
        assert!((0..1000).all(|k| keyed_noise(k, 2, 10.0).abs() <= 10.0));
    }
}
