//! Vectorisable f32 elementary functions for the hot element-wise loops (libm's are scalar calls,
//! which stop the compiler from vectorising a loop around them).

/// Defines a function whose body is compiled twice: for AVX2 + FMA (picked at run time when the
/// CPU has them) and for the build's baseline. Release builds target baseline x86-64 (SSE2: no
/// vector rounding, so `round_ties_even` is a libm call and loops around it stay scalar). The
/// arithmetic is identical in both (Rust never contracts `a * b + c` into an FMA on its own).
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx,avx2,fma,sse4.1")]
            unsafe fn avx2($($arg: $ty),*) {
                generic($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::cpu::tier() >= $crate::kernels::cpu::Tier::Avx2 {
                // SAFETY: the tier is only this high when AVX2 and FMA were detected.
                return unsafe { avx2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// An integral `f32` with |v| < 2^22 as `i32`, through the bits of `v + 1.5 * 2^23`. Unlike
/// `v as i32` (saturating, NaN to 0: scalar code) this is a vector add and integer subtract.
#[inline(always)]
fn small_int(v: f32) -> i32 {
    const MAGIC: f32 = 12_582_912.0;
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
}

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
    let q = small_int(j);
    let v = if q & 1 == 0 { s } else { c };
    if q & 2 == 0 {
        v
    } else {
        -v
    }
}

/// `exp(x)` for the whole f32 range (0 below about -87.3, +inf above about 88.7), within 2 ulp
/// (see the test). Cody–Waite reduction `x = n ln2 + r`, a degree-6 polynomial for `e^r`, then
/// `2^n` built in the exponent bits (in two halves so that `n = 128` and subnormals work).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-104.0, 89.0);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Cephes expf coefficients: e^r = 1 + r + r^2 P(r) on |r| <= ln2/2.
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = 1.0 + r + r * r * p;
    let n = small_int(n);
    let half = n / 2;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((n - half + 127) as u32) << 23);
    y * scale_a * scale_b
}

/// `erfc(x)` with relative error below 1.2e-7 for all x (Numerical Recipes' Chebyshev fit
/// `t exp(-z^2 + P(t))`, `t = 1 / (1 + z/2)`), branch-free so loops vectorise.
#[inline(always)]
pub fn erfc(x: f32) -> f32 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_2
        + t * (1.000_023_7
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_204
                                + t * (1.488_515_9 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * exp(poly);
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// PyTorch's exact GELU `x/2 (1 + erf(x/√2))`, written as `x/2 erfc(-x/√2)` (no cancellation
/// for negative x).
#[inline(always)]
pub fn gelu_erf(x: f32) -> f32 {
    0.5 * x * erfc(-x * std::f32::consts::FRAC_1_SQRT_2)
}

/// The tanh-approximation GELU (HF `gelu_new`): `x/2 (1 + tanh(u))` with
/// `u = sqrt(2/π) (x + 0.044715 x^3)`, written as `x / (1 + exp(-2u))` (no cancellation).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * u))
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
    #[test]
    fn exp_is_within_two_ulp_over_the_range_and_saturates() {
        let mut worst = 0;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let exact = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), exact));
            x += 0.000_913;
        }
        assert!(worst <= 2, "worst {worst} ulp");
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-1e30), 0.0);
        assert_eq!(exp(f32::MIN), 0.0);
        assert!(exp(1e30).is_infinite());
        // Subnormal results keep their value (not flushed to zero).
        let sub = exp(-100.0);
        // (a subnormal keeps few significant bits, hence the loose bound).
        assert!(sub > 0.0 && ((sub as f64) / (-100f64).exp() - 1.0).abs() < 5e-2);
    }

    #[test]
    fn gelu_tanh_matches_the_tanh_formula() {
        let mut worst = 0f64;
        let mut x = -9.0f32;
        while x <= 9.0 {
            let xd = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd * xd * xd);
            let exact = 0.5 * xd * (1.0 + u.tanh());
            let got = gelu_tanh(x) as f64;
            worst = worst.max((got - exact).abs() / exact.abs().max(1e-3));
            x += 0.000_9;
        }
        assert!(worst < 1e-6, "worst error {worst:e}");
        assert_eq!(gelu_tanh(-30.0), 0.0);
        assert_eq!(gelu_tanh(30.0), 30.0);
    }

    #[test]
    fn gelu_matches_the_erf_definition() {
        let mut worst_rel = 0f64;
        let mut x = -12.0f32;
        while x <= 12.0 {
            let xd = x as f64;
            let exact = 0.5 * xd * libm::erfc(-xd / std::f64::consts::SQRT_2);
            let got = gelu_erf(x) as f64;
            if x >= -5.0 {
                worst_rel = worst_rel.max((got - exact).abs() / exact.abs().max(1e-30));
            } else {
                // Far tail: f32's rounding of z^2 dominates (relative 2e-5 at x = -12, where
                // the value is 1e-32); PyTorch's own `1 + erf` is exactly 0 below about -5.9.
                let rel = (got - exact).abs() / exact.abs();
                assert!(rel < 3e-5, "x {x}: {got} vs {exact}");
            }
            x += 0.0007;
        }
        // 1.9e-6 measured, at x near -5 (rounding of z^2 again); f32 `1 + erf` is off by up to ~1e-1 there.
        assert!(worst_rel < 2.5e-6, "worst relative error {worst_rel:e}");
        assert_eq!(gelu_erf(0.0), 0.0);
        assert_eq!(gelu_erf(-30.0), 0.0);
        assert_eq!(gelu_erf(30.0), 30.0);
    }
}
