//! Vectorisable f32 elementary functions for the hot element-wise loops (libm's are scalar calls,
//! which stop the compiler from vectorising a loop around them).

/// Above this |x| the 3-constant reduction by π/2 loses accuracy; callers use `libm::sinf`.
pub const SIN_FAST_LIMIT: f32 = 8192.0;

/// π/2 split so that `j * PIO2_HI` and `j * PIO2_MID` are exact for |j| < 2^15 (Cody–Waite).
const PIO2_HI: f32 = 1.570_312_5;
const PIO2_MID: f32 = 4.837_513e-4;
const PIO2_LO: f32 = 7.549_79e-8;

/// `sin(x)` for `|x| <= SIN_FAST_LIMIT`, within 2 ulp of the correctly rounded value
/// (see the test). Branch-free, so a loop over a slice vectorises.
#[inline(always)]
pub fn sin(x: f32) -> f32 {
    let j = (x * std::f32::consts::FRAC_2_PI).round_ties_even();
    let r = ((x - j * PIO2_HI) - j * PIO2_MID) - j * PIO2_LO;
    let z = r * r;
    // Minimax polynomials on [-π/4, π/4] (Cephes sinf / cosf coefficients).
    let s = r + r * z * ((-1.951_529_6e-4 * z + 8.332_161e-3) * z - 1.666_665_5e-1);
    let c = 1.0 - 0.5 * z + z * z * ((2.443_315_7e-5 * z - 1.388_731_6e-3) * z + 4.166_664_6e-2);
    let q = j as i32;
    let v = if q & 1 == 0 { s } else { c };
    if q & 2 == 0 {
        v
    } else {
        -v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f32) -> u32 {
        let (a, b) = (a.to_bits() as i32, b.to_bits() as i32);
        // Same-sign values: distance in representable steps; around zero compare magnitudes.
        if (a < 0) == (b < 0) {
            a.abs_diff(b)
        } else {
            (a & 0x7fff_ffff) as u32 + (b & 0x7fff_ffff) as u32
        }
    }

    #[test]
    fn sin_is_within_two_ulp_or_tiny_absolute_error_up_to_the_limit() {
        let mut worst_ulp = 0;
        let mut worst_abs = 0f64;
        let mut x = -SIN_FAST_LIMIT;
        while x <= SIN_FAST_LIMIT {
            let exact = (x as f64).sin();
            let got = sin(x);
            let abs = (got as f64 - exact).abs();
            worst_abs = worst_abs.max(abs);
            // Near the zeros of sin the absolute error is what matters (the value is tiny).
            if exact.abs() > 1e-3 {
                worst_ulp = worst_ulp.max(ulps(got, exact as f32));
            }
            x += 0.000_731 * (1.0 + x.abs());
        }
        assert!(worst_ulp <= 2, "worst {worst_ulp} ulp");
        assert!(worst_abs < 1e-6, "worst absolute error {worst_abs}");
        for &x in &[0.0f32, 1e-30, -1e-30, 1e-7, 0.5, 1.0, 3.0, -7.5, 100.25] {
            assert!(
                (sin(x) as f64 - (x as f64).sin()).abs()
                    <= 1.2e-7 * (x as f64).sin().abs().max(1e-30) + 1e-37
            );
        }
    }
}
