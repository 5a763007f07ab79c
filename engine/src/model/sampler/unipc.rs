//! UniPC (bh2, order 2, data prediction): diffusers' `UniPCMultistepScheduler` as
//! `from_config(.., solver_type="bh2", solver_order=2)` builds it on EzAudio's config. Each
//! step first corrects the previous step's result with the new data prediction (UniC), then
//! predicts the next sample (UniP).
//!
//! The scalars follow diffusers' float32 operation order, the 2x2 system of the order-2
//! corrector is solved by LU with partial pivoting as LAPACK does. History: the last two data
//! predictions and the sample before the last predictor, as tensors.
//!
//! One deliberate deviation: where two consecutive sigmas are equal (`h = 0`; schedules ending
//! `[.., 0, -1]`, 33 step counts above 500) diffusers divides 0 by 0 and returns NaN for the
//! whole latent. A step of length 0 is the identity (the limit of the formulas as h -> 0), and
//! that is what this returns.

use candle_core::Tensor;

use super::schedule::Target;
use super::{alpha_sigma, div_scalar, expm1_32, lambda, to_data};
use crate::{Error, Result};

/// The float32 scalars of one predictor or corrector update (diffusers' names).
#[derive(Debug, Clone, PartialEq)]
pub struct UniCoefficients {
    pub order: usize,
    pub sigma_s0: f32,
    pub sigma_t: f32,
    pub alpha_t: f32,
    pub sigma_vp_t: f32,
    pub lambda_s0: f32,
    pub lambda_t: f32,
    pub h: f32,
    pub h_phi_1: f32,
    pub b_h: f32,
    /// `[r_1, .., 1]`.
    pub rks: Vec<f32>,
    pub b: Vec<f32>,
    /// Predictor: `[0.5]` at order 2, empty at order 1. Corrector: `[0.5]` at order 1, the
    /// solution of `R rhos = b` at order 2.
    pub rhos: Vec<f32>,
}

impl UniCoefficients {
    /// A step of length 0 (equal sigmas): the identity.
    pub fn is_empty_step(&self) -> bool {
        self.h == 0.0
    }
}

/// `torch.linalg.solve([[1, 1], [r, 1]], b)` in float32: LU with partial pivoting (the
/// multiplier by the pivot's reciprocal, as LAPACK's getf2), then the two triangular solves.
fn solve_2x2(r: f32, b: [f32; 2]) -> [f32; 2] {
    let (mut a, mut rhs) = ([[1.0f32, 1.0], [r, 1.0]], b);
    if r.abs() > 1.0 {
        a.swap(0, 1);
        rhs.swap(0, 1);
    }
    let l = a[1][0] * (1.0 / a[0][0]);
    let u11 = a[1][1] - l * a[0][1];
    let y1 = rhs[1] - l * rhs[0];
    let x1 = y1 / u11;
    let x0 = (rhs[0] - x1 * a[0][1]) / a[0][0];
    [x0, x1]
}

/// The update from `sigmas[s0]` to `sigmas[t]` of `order`, with `sigmas[s1]` the earlier
/// point of order 2; `corrector` selects the rhos.
fn update_coefficients(
    sigmas: &[f32],
    s0: usize,
    t: usize,
    s1: Option<usize>,
    order: usize,
    corrector: bool,
) -> UniCoefficients {
    let (sigma_s0, sigma_t) = (sigmas[s0], sigmas[t]);
    let (alpha_s0, sigma_vp_s0) = alpha_sigma(sigma_s0);
    let (alpha_t, sigma_vp_t) = alpha_sigma(sigma_t);
    let lambda_s0 = lambda(alpha_s0, sigma_vp_s0);
    let lambda_t = lambda(alpha_t, sigma_vp_t);
    let h = lambda_t - lambda_s0;
    let mut rks = Vec::with_capacity(order);
    if let (2, Some(s1)) = (order, s1) {
        let (a1, v1) = alpha_sigma(sigmas[s1]);
        rks.push((lambda(a1, v1) - lambda_s0) / h);
    }
    rks.push(1.0);
    let hh = -h;
    let h_phi_1 = expm1_32(hh);
    let b_h = expm1_32(hh);
    let mut h_phi_k = h_phi_1 / hh - 1.0;
    let mut factorial = 1u32;
    let mut b = Vec::with_capacity(order);
    for i in 1..=order as u32 {
        b.push(h_phi_k * factorial as f32 / b_h);
        factorial *= i + 1;
        h_phi_k = h_phi_k / hh - (1.0 / factorial as f64) as f32;
    }
    let rhos = match (corrector, order) {
        (false, 1) => vec![],
        (false, _) | (true, 1) => vec![0.5],
        (true, _) => solve_2x2(rks[0], [b[0], b[1]]).to_vec(),
    };
    UniCoefficients {
        order,
        sigma_s0,
        sigma_t,
        alpha_t,
        sigma_vp_t,
        lambda_s0,
        lambda_t,
        h,
        h_phi_1,
        b_h,
        rks,
        b,
        rhos,
    }
}

/// The corrector of step `k` (> 0; it corrects step k-1, of order `order`).
pub fn corrector_coefficients(sigmas: &[f32], k: usize, order: usize) -> UniCoefficients {
    let s1 = (order == 2 && k >= 2).then(|| k - 2);
    update_coefficients(sigmas, k - 1, k, s1, if s1.is_some() { 2 } else { 1 }, true)
}

/// The predictor of step `k`, of `order`.
pub fn predictor_coefficients(sigmas: &[f32], k: usize, order: usize) -> UniCoefficients {
    let s1 = (order == 2 && k >= 1).then(|| k - 1);
    update_coefficients(
        sigmas,
        k,
        k + 1,
        s1,
        if s1.is_some() { 2 } else { 1 },
        false,
    )
}

/// The predictor order of step `k` of `steps`: `min(2, steps - k, k + 1)`.
pub fn predictor_order(k: usize, steps: usize) -> usize {
    2.min(steps - k).min(k + 1)
}

/// One run of UniPC bh2: the step index, the last two data predictions, the sample the last
/// predictor started from and that predictor's order.
#[derive(Debug, Clone)]
pub struct UniPc {
    sigmas: Vec<f32>,
    target: Target,
    k: usize,
    prev: Option<Tensor>,
    cur: Option<Tensor>,
    last_sample: Option<Tensor>,
    last_order: usize,
}

impl UniPc {
    pub(crate) fn new(sigmas: Vec<f32>, target: Target) -> Self {
        Self {
            sigmas,
            target,
            k: 0,
            prev: None,
            cur: None,
            last_sample: None,
            last_order: 1,
        }
    }

    /// diffusers `step(model_output, t_k, sample).prev_sample` for the next step k.
    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let steps = self.sigmas.len().saturating_sub(1);
        let k = self.k;
        if k >= steps {
            return Err(Error::InvalidInput(format!(
                "UniPC step {k} is past the last of {steps} steps"
            )));
        }
        let (alpha_s, sigma_vp_s) = alpha_sigma(self.sigmas[k]);
        let x0 = to_data(self.target, model_output, sample, alpha_s, sigma_vp_s)?;
        let mut sample = sample.clone();
        if let (Some(last), Some(cur)) = (&self.last_sample, &self.cur) {
            let c = corrector_coefficients(&self.sigmas, k, self.last_order);
            sample = if c.is_empty_step() {
                last.clone()
            } else {
                let mut x = ((last * (c.sigma_vp_t / c.sigma_vp_s0()) as f64)?
                    - (cur * (c.alpha_t * c.h_phi_1) as f64)?)?;
                let d1_t = (&x0 - cur)?;
                let mut res = (d1_t * c.rhos[c.rhos.len() - 1] as f64)?;
                if c.order == 2 {
                    let prev = self.prev.as_ref().ok_or_else(|| {
                        Error::Internal("UniPC corrector of order 2 without history".into())
                    })?;
                    let d1 = div_scalar(&(prev - cur)?, c.rks[0])?;
                    res = ((d1 * c.rhos[0] as f64)? + res)?;
                }
                x = (x - (res * (c.alpha_t * c.b_h) as f64)?)?;
                x
            };
        }
        self.prev = self.cur.take();
        self.cur = Some(x0);
        let order = predictor_order(k, steps);
        self.last_sample = Some(sample.clone());
        self.last_order = order;
        let c = predictor_coefficients(&self.sigmas, k, order);
        self.k += 1;
        if c.is_empty_step() {
            return Ok(sample);
        }
        let cur = self
            .cur
            .as_ref()
            .ok_or_else(|| Error::Internal("UniPC history".into()))?;
        let mut x = ((&sample * (c.sigma_vp_t / c.sigma_vp_s0()) as f64)?
            - (cur * (c.alpha_t * c.h_phi_1) as f64)?)?;
        if c.order == 2 {
            let prev = self.prev.as_ref().ok_or_else(|| {
                Error::Internal("UniPC predictor of order 2 without history".into())
            })?;
            let d1 = div_scalar(&(prev - cur)?, c.rks[0])?;
            x = (x - ((d1 * c.rhos[0] as f64)? * (c.alpha_t * c.b_h) as f64)?)?;
        }
        Ok(x)
    }
}

impl UniCoefficients {
    /// `sigma_vp` at the start point.
    pub fn sigma_vp_s0(&self) -> f32 {
        alpha_sigma(self.sigma_s0).1
    }
}
