//! Band-limited resampling between the model rate and the host rate.
//!
//! Offline work (engine or GUI thread), never audio-thread work: the result is handed to the
//! audio thread already at the host rate, see [`super::published`].

use crate::{Error, Result};

/// Highest sample rate accepted anywhere (engine, host, saved states); keeps the FFT sizes of odd rate pairs bounded.
pub const MAX_RATE: u32 = 1_536_000;

/// Lowest sample rate accepted anywhere. rubato's block sizes grow with the rate ratio: from
/// 1 Hz to 24 kHz one block is tens of millions of frames (gigabytes). From 1 kHz the largest
/// pair within [`MAX_RATE`] stays under ten million frames, and no real recording is slower.
pub const MIN_RATE: u32 = 1_000;

/// Target FFT block on the input side. The anti-aliasing filter has this many taps, so it
/// sets the transition width: ~2k taps puts the -60 dB edge within a few hundred Hz of Nyquist.
const TARGET_BLOCK: usize = 2048;

/// Band-limited resampling of a mono signal from `from_hz` to `to_hz`.
///
/// Uses rubato's synchronous FFT resampler (a Blackman-Harris² windowed-sinc filter applied in
/// the frequency domain; the filter is as long as the FFT block). Its filter delay is trimmed,
/// so an event at input sample `k` lands at output sample `round(k * to / from)`, and the output
/// has exactly `round(len * to / from)` samples. Equal rates return a copy.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>> {
    for (what, rate) in [("source", from_hz), ("target", to_hz)] {
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(Error::InvalidInput(format!(
                "{what} sample rate {rate} Hz is out of range ({MIN_RATE}..={MAX_RATE} Hz)"
            )));
        }
    }
    if from_hz == to_hz {
        return Ok(samples.to_vec());
    }
    let out_len = rounded_len(samples.len(), from_hz, to_hz);
    if samples.is_empty() {
        return Ok(Vec::new());
    }

    let (from, to) = (from_hz as usize, to_hz as usize);
    let gcd = gcd(from, to);
    let min_in = from / gcd;
    // An even number of minimal blocks makes both FFT sizes even, so the filter's delay
    // (half a block) is a whole number of samples on both sides and trimming is exact.
    let blocks = 2 * TARGET_BLOCK.div_ceil(2 * min_in).max(1);
    let chunk = blocks * min_in;
    let mut resampler = rubato::Fft::<f32>::new_custom(
        from,
        to,
        chunk,
        1,
        1,
        rubato::WindowFunction::BlackmanHarris2,
        rubato::FixedSync::Both,
    )
    .map_err(|e| Error::InvalidInput(format!("resampler {from_hz} -> {to_hz} Hz: {e}")))?;

    use rubato::Resampler as _;
    let input =
        rubato::audioadapter_buffers::direct::InterleavedSlice::new(samples, 1, samples.len())
            .map_err(|e| Error::InvalidInput(format!("resample input: {e}")))?;
    let output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|e| Error::InvalidInput(format!("resampling {from_hz} -> {to_hz} Hz: {e}")))?;
    let mut out = output.take_data();
    // rubato yields ceil(len * ratio) frames; we promise round(). Pad defensively too.
    out.resize(out_len, 0.0);
    Ok(out)
}

/// `round(len * to / from)` in exact integer arithmetic.
fn rounded_len(len: usize, from: u32, to: u32) -> usize {
    let num = len as u128 * to as u128;
    ((num + from as u128 / 2) / from as u128) as usize
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    const RATES: [u32; 4] = [44_100, 48_000, 88_200, 96_000];

    fn sine(freq: f64, rate: u32, len: usize) -> Vec<f32> {
        (0..len)
            .map(|n| (2.0 * PI * freq * n as f64 / rate as f64).sin() as f32)
            .collect()
    }

    /// Amplitude of the component at `freq`, by a DFT bin with a 4-term Blackman-Harris window
    /// (sidelobes below -92 dB, so leakage from a strong tone doesn't mask the measurement).
    fn tone_amplitude(x: &[f32], rate: u32, freq: f64) -> f64 {
        let n = x.len();
        let (a0, a1, a2, a3) = (0.35875, 0.48829, 0.14128, 0.01168);
        let (mut re, mut im, mut wsum) = (0.0f64, 0.0f64, 0.0f64);
        for (i, &v) in x.iter().enumerate() {
            let p = 2.0 * PI * i as f64 / n as f64;
            let w = a0 - a1 * p.cos() + a2 * (2.0 * p).cos() - a3 * (3.0 * p).cos();
            let ph = 2.0 * PI * freq * i as f64 / rate as f64;
            re += w * v as f64 * ph.cos();
            im -= w * v as f64 * ph.sin();
            wsum += w;
        }
        2.0 * (re * re + im * im).sqrt() / wsum
    }

    fn db(x: f64) -> f64 {
        20.0 * x.max(1e-30).log10()
    }

    #[test]
    fn rejects_zero_rate() {
        assert!(matches!(
            resample(&[0.0; 4], 0, 48_000),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            resample(&[0.0; 4], 24_000, 0),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn rates_below_the_minimum_are_refused_and_the_minimum_works() {
        for rate in [1, 7, MIN_RATE - 1] {
            let e = resample(&[0.0; 4], rate, 24_000).unwrap_err().to_string();
            assert!(e.contains("out of range (1000..=1536000 Hz)"), "{e}");
        }
        let y = resample(&vec![0.5; 1000], MIN_RATE, 24_000).unwrap();
        assert_eq!(y.len(), 24_000);
    }

    #[test]
    fn identity_when_rates_equal() {
        let x = sine(440.0, 24_000, 1000);
        assert_eq!(resample(&x, 24_000, 24_000).unwrap(), x);
    }

    #[test]
    fn output_length_is_rounded_ratio() {
        for &r in &RATES {
            for len in [0usize, 1, 2, 5, 79, 80, 81, 1000, 24_000 * 2 + 7] {
                let up = resample(&vec![0.1; len], 24_000, r).unwrap();
                assert_eq!(
                    up.len(),
                    rounded_len(len, 24_000, r),
                    "24k -> {r}, len {len}"
                );
                let down = resample(&vec![0.1; len], r, 24_000).unwrap();
                assert_eq!(
                    down.len(),
                    rounded_len(len, r, 24_000),
                    "{r} -> 24k, len {len}"
                );
            }
        }
        assert_eq!(rounded_len(3, 24_000, 44_100), 6); // 5.5125
        assert_eq!(rounded_len(1, 48_000, 24_000), 1); // 0.5 rounds up
    }

    #[test]
    fn impulse_keeps_its_time_position() {
        let pairs = RATES.iter().flat_map(|&r| [(24_000, r), (r, 24_000)]);
        for (from, to) in pairs {
            let len = 5000;
            for k in [0usize, 1, 37, 1234, 2500, 4999] {
                let mut x = vec![0.0f32; len];
                x[k] = 1.0;
                let y = resample(&x, from, to).unwrap();
                let peak = (0..y.len())
                    .max_by(|&a, &b| y[a].abs().total_cmp(&y[b].abs()))
                    .unwrap();
                let want = rounded_len(k, from, to) as i64;
                assert!(
                    (peak as i64 - want).abs() <= 1,
                    "{from} -> {to}: impulse at {k} landed at {peak}, want {want}"
                );
            }
        }
    }

    #[test]
    fn sine_is_preserved_in_frequency_and_phase() {
        // A 1 kHz tone must come out as the same 1 kHz tone, sample-aligned: compare with the
        // analytic sine at the new rate away from the edges (where the filter sees the cut).
        for &r in &RATES {
            let x = sine(1000.0, 24_000, 24_000);
            let y = resample(&x, 24_000, r).unwrap();
            let want = sine(1000.0, r, y.len());
            let edge = r as usize / 10;
            let err = y[edge..y.len() - edge]
                .iter()
                .zip(&want[edge..want.len() - edge])
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 1e-3, "24k -> {r}: max error {err}");

            let back = resample(&y, r, 24_000).unwrap();
            let err = back[2400..21_600]
                .iter()
                .zip(&x[2400..21_600])
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 1e-3, "{r} -> 24k: max error {err}");
        }
    }

    #[test]
    fn upsampling_leaves_no_images_above_nyquist() {
        // 11 kHz at 24 kHz: a bad interpolator leaves an image at 24 - 11 = 13 kHz.
        let x = sine(11_000.0, 24_000, 24_000);
        for &r in &RATES {
            let y = resample(&x, 24_000, r).unwrap();
            let tone = tone_amplitude(&y, r, 11_000.0);
            assert!(
                db(tone) > -1.0,
                "24k -> {r}: 11 kHz tone at {:.2} dB",
                db(tone)
            );
            let mut probes = vec![12_500.0, 13_000.0, 14_000.0, 16_000.0, 20_000.0];
            if r > 48_000 {
                probes.extend([35_000.0, 37_000.0, 43_000.0]); // images of 11k around 24k, 48k
            }
            for f in probes {
                let rel = db(tone_amplitude(&y, r, f) / tone);
                assert!(rel < -60.0, "24k -> {r}: {f} Hz at {rel:.1} dB");
            }
        }
    }

    #[test]
    fn downsampling_removes_content_above_new_nyquist() {
        // 13 kHz would fold to 11 kHz at 24 kHz; 9 kHz must pass untouched.
        for &r in &RATES {
            let mut x = sine(13_000.0, r, r as usize);
            let pass = sine(9_000.0, r, r as usize);
            x.iter_mut().zip(&pass).for_each(|(a, b)| *a += b);
            let y = resample(&x, r, 24_000).unwrap();
            let tone = tone_amplitude(&y, 24_000, 9_000.0);
            assert!(
                (db(tone)).abs() < 0.1,
                "{r} -> 24k: 9 kHz at {:.2} dB",
                db(tone)
            );
            let alias = db(tone_amplitude(&y, 24_000, 11_000.0) / tone);
            assert!(alias < -60.0, "{r} -> 24k: alias at 11 kHz {alias:.1} dB");
        }
    }
}
