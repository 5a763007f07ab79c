//! DPM-Solver++ 2M and its SDE variant: diffusers' `DPMSolverMultistepScheduler` with
//! `algorithm_type` `dpmsolver++` / `sde-dpmsolver++`, `solver_order` 2, `solver_type`
//! `midpoint`, `final_sigmas_type` `zero`, `lower_order_final` — what `from_config` gives on
//! EzAudio's config.
//!
//! Every scalar is a float32 operation in diffusers' order (they are 0-d float32 tensors
//! there), so the coefficients land on the reference's values; the tensors only see
//! `scalar * tensor` and sums. The two previous data predictions are the only history, kept as
//! tensors on the latents' device.

use candle_core::Tensor;

use super::schedule::Target;
use super::{alpha_sigma, exp32, lambda, to_data};
use crate::{Error, Result};

/// The float32 scalars of one step, named as in diffusers (`sigma_*` are the schedule's
/// sigmas, `sigma_vp_*` the VP ones, `sigma * alpha`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpmCoefficients {
    /// 1 on the first and the last step, 2 otherwise.
    pub order: usize,
    pub sigma_s0: f32,
    pub sigma_t: f32,
    pub alpha_s0: f32,
    pub sigma_vp_s0: f32,
    pub alpha_t: f32,
    pub sigma_vp_t: f32,
    pub lambda_s0: f32,
    pub lambda_t: f32,
    /// `lambda_t - lambda_s0` (+inf on the last step, to sigma 0).
    pub h: f32,
    /// Order 2 only: `lambda(sigmas[k-1])` and `r0 = (lambda_s0 - lambda_s1) / h`.
    pub lambda_s1: Option<f32>,
    pub r0: Option<f32>,
    /// The sample's factor: `sig_t / sig_s0` (ODE) or `sig_t / sig_s0 * exp(-h)` (SDE).
    pub sample_factor: f32,
    /// The data prediction's factor: `alpha_t * (exp(-h) - 1)` (ODE, subtracted) or
    /// `alpha_t * (1 - exp(-2h))` (SDE, added).
    pub data_factor: f32,
    /// SDE only: `sig_t * sqrt(1 - exp(-2h))`; 0 for the ODE.
    pub noise_scale: f32,
}

/// The coefficients of step `k` over `sigmas` (len = steps + 1, last 0).
pub fn coefficients(sigmas: &[f32], k: usize, sde: bool) -> Result<DpmCoefficients> {
    let steps = sigmas.len().saturating_sub(1);
    if k >= steps {
        return Err(Error::InvalidInput(format!(
            "DPM-Solver step {k} is past the last of {steps} steps"
        )));
    }
    let order = if k == 0 || k == steps - 1 { 1 } else { 2 };
    let (sigma_s0, sigma_t) = (sigmas[k], sigmas[k + 1]);
    let (alpha_s0, sigma_vp_s0) = alpha_sigma(sigma_s0);
    let (alpha_t, sigma_vp_t) = alpha_sigma(sigma_t);
    let lambda_s0 = lambda(alpha_s0, sigma_vp_s0);
    let lambda_t = lambda(alpha_t, sigma_vp_t);
    let h = lambda_t - lambda_s0;
    let (lambda_s1, r0) = if order == 2 {
        let (a1, s1) = alpha_sigma(sigmas[k - 1]);
        let l1 = lambda(a1, s1);
        (Some(l1), Some((lambda_s0 - l1) / h))
    } else {
        (None, None)
    };
    let (sample_factor, data_factor, noise_scale) = if sde {
        let e2 = exp32(-2.0 * h);
        (
            sigma_vp_t / sigma_vp_s0 * exp32(-h),
            alpha_t * (1.0 - e2),
            sigma_vp_t * (1.0 - e2).sqrt(),
        )
    } else {
        (sigma_vp_t / sigma_vp_s0, alpha_t * (exp32(-h) - 1.0), 0.0)
    };
    Ok(DpmCoefficients {
        order,
        sigma_s0,
        sigma_t,
        alpha_s0,
        sigma_vp_s0,
        alpha_t,
        sigma_vp_t,
        lambda_s0,
        lambda_t,
        h,
        lambda_s1,
        r0,
        sample_factor,
        data_factor,
        noise_scale,
    })
}

/// One run of DPM-Solver++ 2M (or SDE-DPM-Solver++ 2M): the step index and the data
/// predictions of the last two steps.
#[derive(Debug, Clone)]
pub struct DpmSolver {
    sigmas: Vec<f32>,
    sde: bool,
    target: Target,
    k: usize,
    prev: Option<Tensor>,
    cur: Option<Tensor>,
}

impl DpmSolver {
    pub(crate) fn new(sigmas: Vec<f32>, sde: bool, target: Target) -> Self {
        Self {
            sigmas,
            sde,
            target,
            k: 0,
            prev: None,
            cur: None,
        }
    }

    /// Whether this is the SDE variant (it needs noise every step).
    pub fn is_sde(&self) -> bool {
        self.sde
    }

    /// diffusers `step(model_output, t_k, sample[, variance_noise]).prev_sample` for the next
    /// step k. The SDE kind needs `noise` (same shape as `sample`) on every step, the last one
    /// included (where it is multiplied by 0).
    pub fn step(
        &mut self,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = coefficients(&self.sigmas, self.k, self.sde)?;
        let x0 = to_data(self.target, model_output, sample, c.alpha_s0, c.sigma_vp_s0)?;
        self.prev = self.cur.take();
        self.cur = Some(x0.clone());
        let d1 = match (c.order, &self.prev, c.r0) {
            (2, Some(prev), Some(r0)) => Some(((&x0 - prev)? * (1.0 / r0) as f64)?),
            _ => None,
        };
        let mut x = (sample * c.sample_factor as f64)?;
        if self.sde {
            x = (x + (&x0 * c.data_factor as f64)?)?;
            if let Some(d1) = &d1 {
                x = (x + (d1 * (0.5 * c.data_factor) as f64)?)?;
            }
            let noise = noise.ok_or_else(|| {
                Error::InvalidInput(format!("SDE-DPM-Solver++ step {} needs noise", self.k))
            })?;
            if noise.dims() != sample.dims() {
                return Err(Error::InvalidInput(format!(
                    "SDE noise shape {:?} differs from sample shape {:?}",
                    noise.dims(),
                    sample.dims()
                )));
            }
            x = (x + (noise.to_dtype(sample.dtype())? * c.noise_scale as f64)?)?;
        } else {
            x = (x - (&x0 * c.data_factor as f64)?)?;
            if let Some(d1) = &d1 {
                x = (x - (d1 * (0.5 * c.data_factor) as f64)?)?;
            }
        }
        self.k += 1;
        Ok(x)
    }
}
