//! Integrated loudness after ITU-R BS.1770-4 (the EBU R128 measure), for a mono signal.
//!
//! K-weighting is the standard's two biquads (a high shelf for the head's acoustic effect, then
//! a high pass), derived for any sample rate from their analog prototypes the way libebur128
//! does, so 48 kHz gives exactly the coefficients printed in the standard. Gating: 400 ms blocks
//! with 75 % overlap, an absolute gate at -70 LUFS, then a relative gate 10 LU below the mean.
//! A mono file counts as one channel (weight 1.0), as the standard specifies.

use std::f64::consts::PI;

#[derive(Clone, Copy)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 3],
}

impl Biquad {
    fn run(&self, x: &[f64]) -> Vec<f64> {
        let (mut x1, mut x2, mut y1, mut y2) = (0.0, 0.0, 0.0, 0.0);
        x.iter()
            .map(|&x0| {
                let y0 = self.b[0] * x0 + self.b[1] * x1 + self.b[2] * x2
                    - self.a[1] * y1
                    - self.a[2] * y2;
                (x2, x1, y2, y1) = (x1, x0, y1, y0);
                y0
            })
            .collect()
    }
}

fn k_weighting(rate: f64) -> [Biquad; 2] {
    // Stage 1: high shelf, +4 dB above ~1.7 kHz.
    let (f0, gain_db, q) = (1681.974450955533, 3.999843853973347, 0.7071752369554196);
    let k = (PI * f0 / rate).tan();
    let vh = 10f64.powf(gain_db / 20.0);
    let vb = vh.powf(0.4996667741545416);
    let a0 = 1.0 + k / q + k * k;
    let shelf = Biquad {
        b: [
            (vh + vb * k / q + k * k) / a0,
            2.0 * (k * k - vh) / a0,
            (vh - vb * k / q + k * k) / a0,
        ],
        a: [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
    };
    // Stage 2: second-order high pass at ~38 Hz.
    let (f0, q) = (38.13547087602444, 0.5003270373238773);
    let k = (PI * f0 / rate).tan();
    let a0 = 1.0 + k / q + k * k;
    let high_pass = Biquad {
        b: [1.0, -2.0, 1.0],
        a: [1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
    };
    [shelf, high_pass]
}

fn lufs(mean_square: f64) -> f64 {
    -0.691 + 10.0 * mean_square.log10()
}

/// Integrated loudness in LUFS; `None` when the clip is shorter than one 400 ms block or every
/// block is below the absolute gate (near silence), where loudness is undefined.
pub fn integrated_lufs(samples: &[f32], sample_rate: u32) -> Option<f64> {
    let rate = sample_rate as f64;
    let block = (0.4 * rate).round() as usize;
    let hop = (0.1 * rate).round() as usize;
    if block == 0 || hop == 0 || samples.len() < block {
        return None;
    }
    let x: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
    let [shelf, high_pass] = k_weighting(rate);
    let y = high_pass.run(&shelf.run(&x));

    // Mean square per block, from a running sum of squares.
    let mut cumsum = Vec::with_capacity(y.len() + 1);
    cumsum.push(0.0);
    for v in &y {
        cumsum.push(cumsum.last().copied().unwrap_or(0.0) + v * v);
    }
    let blocks: Vec<f64> = (0..=(y.len() - block) / hop)
        .map(|j| (cumsum[j * hop + block] - cumsum[j * hop]) / block as f64)
        .collect();

    let above_absolute: Vec<f64> = blocks
        .into_iter()
        .filter(|&z| z > 0.0 && lufs(z) > -70.0)
        .collect();
    if above_absolute.is_empty() {
        return None;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let relative_gate = lufs(mean(&above_absolute)) - 10.0;
    let gated: Vec<f64> = above_absolute
        .into_iter()
        .filter(|&z| lufs(z) > relative_gate)
        .collect();
    (!gated.is_empty()).then(|| lufs(mean(&gated)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, amp: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (seconds * rate as f64) as usize;
        (0..n)
            .map(|i| (amp * (2.0 * PI * freq * i as f64 / rate as f64).sin()) as f32)
            .collect()
    }

    #[test]
    fn matches_the_standard_at_48k() {
        // BS.1770: the 48 kHz stage-1 coefficients as printed in the standard.
        let [shelf, hp] = k_weighting(48_000.0);
        assert!((shelf.b[0] - 1.53512485958697).abs() < 1e-9);
        assert!((shelf.a[1] + 1.69065929318241).abs() < 1e-9);
        assert!((hp.a[1] + 1.99004745483398).abs() < 1e-9);
        // A full-scale 997 Hz sine in one channel reads -3.01 LUFS.
        let l = integrated_lufs(&sine(997.0, 1.0, 48_000, 5.0), 48_000).unwrap();
        assert!((l + 3.01).abs() < 0.05, "{l}");
    }

    #[test]
    fn gain_moves_loudness_one_to_one_at_any_rate() {
        for rate in [24_000, 44_100] {
            let a = integrated_lufs(&sine(1000.0, 0.5, rate, 3.0), rate).unwrap();
            let b = integrated_lufs(&sine(1000.0, 0.05, rate, 3.0), rate).unwrap();
            assert!((a - b - 20.0).abs() < 0.01, "{rate}: {a} vs {b}");
            assert!((a - (-3.01 - 6.02)).abs() < 0.1, "{rate}: {a}");
        }
    }

    #[test]
    fn undefined_for_short_or_silent_clips() {
        assert_eq!(integrated_lufs(&[0.5; 100], 24_000), None);
        assert_eq!(integrated_lufs(&vec![0.0; 48_000], 24_000), None);
    }
}
