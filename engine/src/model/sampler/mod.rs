//! The samplers: DDIM (the official one, [`crate::model::ddim`]) and three multistep solvers
//! from diffusers that work with EzAudio's schedule (zero-terminal-SNR betas, trailing
//! spacing, v-prediction) — DPM-Solver++ 2M, SDE-DPM-Solver++ 2M and UniPC bh2 — matching
//! diffusers step for step.
//!
//! Why more than DDIM: the DiT forward is the whole cost of a step, so fewer steps is the
//! largest speed lever there is; second-order solvers reach DDIM's fidelity in fewer steps
//! (see the README's convergence table for what is measured).
//!
//! [`Sampler`] names the kind (it is part of the [`crate::Recipe`]), [`Schedule`] holds the
//! tables every kind shares, [`Solver`] is the state of one run (its step index and history,
//! as tensors on the latents' device: no host copies per step).
//!
//! The trailing-spacing quirk: for 62 step counts in 1..1000 diffusers' `set_timesteps(n)`
//! returns n + 1 timesteps ending in -1. [`Schedule::timesteps`] reproduces the list. What a
//! run does with it is [`Schedule::plan`]: the multistep solvers follow the reference (one
//! extra model call at t = -1, sigma of t = 0: finite and sane), DDIM does not (see there).

mod dpm;
mod schedule;
mod unipc;

pub use dpm::{coefficients as dpm_coefficients, DpmCoefficients, DpmSolver};
pub use schedule::{Schedule, Spacing};
pub use unipc::{
    corrector_coefficients as unipc_corrector_coefficients,
    predictor_coefficients as unipc_predictor_coefficients,
    predictor_order as unipc_predictor_order, UniCoefficients, UniPc,
};

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::model::ddim::Ddim;
use crate::{Error, Result};
use schedule::Target;

/// Which sampler a run uses. Serialised by its CLI name (`"ddim"`, `"dpm++2m"`, ...); a
/// recipe without the key is DDIM, what every release before this one used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sampler {
    /// diffusers `DDIMScheduler` (the official sampler; `eta` applies to it only).
    #[default]
    #[serde(rename = "ddim")]
    Ddim,
    /// DPM-Solver++ 2M: deterministic, second order.
    #[serde(rename = "dpm++2m")]
    DpmPp2m,
    /// SDE-DPM-Solver++ 2M: stochastic (fresh noise every step, like DDIM at eta 1).
    #[serde(rename = "dpm++2m-sde")]
    DpmPp2mSde,
    /// UniPC bh2, order 2 (predictor-corrector): deterministic.
    #[serde(rename = "unipc")]
    UniPc,
}

impl Sampler {
    pub const ALL: [Sampler; 4] = [
        Sampler::Ddim,
        Sampler::DpmPp2m,
        Sampler::DpmPp2mSde,
        Sampler::UniPc,
    ];
    /// The names, in [`Sampler::ALL`]'s order.
    pub const NAMES: [&'static str; 4] = ["ddim", "dpm++2m", "dpm++2m-sde", "unipc"];

    pub fn name(self) -> &'static str {
        match self {
            Sampler::Ddim => Self::NAMES[0],
            Sampler::DpmPp2m => Self::NAMES[1],
            Sampler::DpmPp2mSde => Self::NAMES[2],
            Sampler::UniPc => Self::NAMES[3],
        }
    }

    /// Whether the same seed, prompt and settings always give the same clip at any step
    /// count's limit, i.e. the sampler follows the ODE (DDIM only at eta 0).
    pub fn is_deterministic(self, eta: f32) -> bool {
        match self {
            Sampler::Ddim => eta == 0.0,
            Sampler::DpmPp2m | Sampler::UniPc => true,
            Sampler::DpmPp2mSde => false,
        }
    }
}

impl fmt::Display for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Sampler {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Sampler::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "unknown sampler '{s}' (one of: {})",
                    Sampler::NAMES.join(", ")
                ))
            })
    }
}

/// `alpha = 1 / sqrt(s^2 + 1)` and `sigma_vp = s * alpha` in float32 (diffusers'
/// `_sigma_to_alpha_sigma_t`).
pub(crate) fn alpha_sigma(s: f32) -> (f32, f32) {
    let alpha = 1.0 / (s * s + 1.0).sqrt();
    (alpha, s * alpha)
}

/// The float32 transcendental functions, correctly rounded (evaluated in float64, rounded
/// once): that is what the reference's values are (checked on every per-step scalar of the
/// fixtures), while the platform's `logf`/`expm1f` may be an ulp off — which the UniPC
/// coefficients (`expm1(-h) / -h - 1`, ...) amplify by cancellation into ~1e-5.
pub(crate) fn ln32(x: f32) -> f32 {
    (x as f64).ln() as f32
}
pub(crate) fn exp32(x: f32) -> f32 {
    (x as f64).exp() as f32
}
pub(crate) fn expm1_32(x: f32) -> f32 {
    (x as f64).exp_m1() as f32
}

/// `log(alpha) - log(sigma_vp)` (+inf at sigma 0).
pub(crate) fn lambda(alpha: f32, sigma_vp: f32) -> f32 {
    ln32(alpha) - ln32(sigma_vp)
}

/// `x / c` with a float32 divisor, as a true division (candle's `Tensor / f64` multiplies by
/// the reciprocal).
pub(crate) fn div_scalar(x: &Tensor, c: f32) -> Result<Tensor> {
    let c = Tensor::new(c, x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&c)?)
}

/// diffusers `convert_model_output`: the network output as a data prediction x0.
pub(crate) fn to_data(
    target: Target,
    model_output: &Tensor,
    sample: &Tensor,
    alpha: f32,
    sigma_vp: f32,
) -> Result<Tensor> {
    if model_output.dims() != sample.dims() {
        return Err(Error::InvalidInput(format!(
            "model output shape {:?} differs from sample shape {:?}",
            model_output.dims(),
            sample.dims()
        )));
    }
    let out = model_output.to_dtype(sample.dtype())?;
    Ok(match target {
        Target::V => ((sample * alpha as f64)? - (out * sigma_vp as f64)?)?,
        Target::Epsilon => div_scalar(&(sample - (out * sigma_vp as f64)?)?, alpha)?,
        Target::Sample => out,
    })
}

/// The state of one sampling run: which timesteps, where it is, and the solver's history.
#[derive(Debug, Clone)]
pub struct Solver<'a> {
    timesteps: Vec<i64>,
    kind: SolverKind<'a>,
}

#[derive(Debug, Clone)]
enum SolverKind<'a> {
    Ddim {
        ddim: &'a Ddim,
        steps: usize,
        eta: f64,
        k: usize,
        /// Each step to the next timestep of the list (`Spacing::Quadratic`), not to
        /// `t - 1000 // steps`.
        to_next: bool,
    },
    Dpm(DpmSolver),
    UniPc(UniPc),
}

impl Schedule {
    /// The timesteps a run of `sampler` at `steps` evaluates the model at.
    ///
    /// diffusers' list ([`Schedule::timesteps`]), except for DDIM at the 62 step counts whose
    /// list ends in an extra -1 (n = 61, 103, 121, ...). There the reference's last DDIM step
    /// reads `alphas_cumprod[-1]` Python-style (= `alphas_cumprod[999]` = 0 under zero
    /// terminal SNR) and returns `-v(x, t = -1)`: for a v-prediction model near t = 0 an
    /// estimate of the remaining noise, not the audio (`--steps 61` of the official code ends
    /// in noise). This port drops that -1 for DDIM, so the last real timestep's step goes to
    /// `final_alpha_cumprod` (1) like at every other count: a documented deviation. The
    /// multistep solvers keep the reference's list (their t = -1 step uses the sigma of t = 0
    /// and is finite), with UniPC's equal-sigma steps made the identity (see `unipc`).
    ///
    /// With [`Spacing::Quadratic`] ([`Schedule::with_spacing`]) every sampler uses that list
    /// (no -1 there).
    pub fn plan(&self, sampler: Sampler, steps: usize) -> Result<Vec<i64>> {
        let mut ts = self.spaced_timesteps(steps)?;
        if sampler == Sampler::Ddim && ts.len() > 1 && ts.last() == Some(&-1) {
            ts.pop();
        }
        Ok(ts)
    }

    /// A fresh run of `sampler` at `steps` (`eta`: DDIM's, ignored by the others).
    pub fn solver(&self, sampler: Sampler, steps: usize, eta: f64) -> Result<Solver<'_>> {
        let timesteps = self.plan(sampler, steps)?;
        let kind = match sampler {
            Sampler::Ddim => {
                if !(eta.is_finite() && eta >= 0.0) {
                    return Err(Error::InvalidInput(format!(
                        "DDIM eta {eta} must be a finite number >= 0"
                    )));
                }
                SolverKind::Ddim {
                    ddim: self.ddim(),
                    steps,
                    eta,
                    k: 0,
                    to_next: self.spacing() != Spacing::Trailing,
                }
            }
            Sampler::DpmPp2m | Sampler::DpmPp2mSde => SolverKind::Dpm(DpmSolver::new(
                self.sigmas(steps)?,
                sampler == Sampler::DpmPp2mSde,
                self.target(),
            )),
            Sampler::UniPc => SolverKind::UniPc(UniPc::new(self.sigmas(steps)?, self.target())),
        };
        Ok(Solver { timesteps, kind })
    }
}

impl Solver<'_> {
    /// The timesteps of the run, in order; one model call and one [`Solver::step`] each.
    pub fn timesteps(&self) -> &[i64] {
        &self.timesteps
    }

    /// Whether [`Solver::step`] needs a noise tensor (DDIM with eta > 0, the SDE solver).
    pub fn needs_noise(&self) -> bool {
        match &self.kind {
            SolverKind::Ddim { eta, .. } => *eta > 0.0,
            SolverKind::Dpm(d) => d.is_sde(),
            SolverKind::UniPc(_) => false,
        }
    }

    /// The next step: the model's output at the next timestep and the current sample give
    /// the next sample.
    pub fn step(
        &mut self,
        model_output: &Tensor,
        sample: &Tensor,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        match &mut self.kind {
            SolverKind::Ddim {
                ddim,
                steps,
                eta,
                k,
                to_next,
            } => {
                let t = *self.timesteps.get(*k).ok_or_else(|| {
                    Error::InvalidInput(format!("DDIM run has no step {k} (it has {})", steps))
                })?;
                let next = if *to_next {
                    let prev = self.timesteps.get(*k + 1).copied().unwrap_or(-1);
                    ddim.step_to(model_output, t, prev, sample, *eta, noise)?
                } else {
                    ddim.step(model_output, t, *steps, sample, *eta, noise)?
                };
                *k += 1;
                Ok(next)
            }
            SolverKind::Dpm(d) => d.step(model_output, sample, noise),
            SolverKind::UniPc(u) => u.step(model_output, sample),
        }
    }
}
