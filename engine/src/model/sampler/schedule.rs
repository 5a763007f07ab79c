//! The noise schedule of the multistep solvers, shared by DPM-Solver++ and UniPC: diffusers'
//! `alphas_cumprod` with the zero-terminal-SNR end moved to 2^-24 (so the first sigma is finite,
//! 4096) and the sigma table `sqrt((1 - ac) / ac)` looked up at the timesteps.
//!
//! Why float64: `sigma` loses digits to cancellation near t = 0 and the zero-SNR rescale loses
//! digits near t = 999, so the last float32 bits of diffusers' own table depend on how torch
//! evaluates its `cumprod` on a given CPU. The tables are computed in float64 and rounded once,
//! which lands closest to the exact values (and within the fixtures' bounds). The timesteps
//! are DDIM's (`Ddim::timesteps`), the same `trailing` list with the same numpy quirk.

use serde::{Deserialize, Serialize};

use crate::model::ddim::{Ddim, DdimConfig};
use crate::{Error, Result};

/// Which timesteps a run evaluates the model at.
///
/// `Trailing` is diffusers' list for EzAudio's config (the default; every parity test is on
/// it). Its last model call is at `t_min = 1000 / n - 1` (39 at 25 steps), and every sampler's
/// last step jumps from there straight to the data prediction: on an exactly solvable control
/// that jump alone costs 0.074 at 25 steps and 0.037 at 50, whatever the solver
/// (`engine/tests/studies/final_jump.py`, the README's Samplers section).
///
/// `Quadratic` (opt-in, not in diffusers, not recorded by a [`crate::Recipe`]):
/// `t_k = round(999 * (1 - k / (n - 1))^2)`, k = 0..n-1 — still from the zero-SNR end 999, every
/// call at an integer timestep the model was trained on, dense near t = 0, the last call at
/// t = 0 itself (where the final jump costs 0.0017 on the control). Rounding collisions near 0
/// are moved up by one so the n timesteps are distinct. One step is `[999]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Spacing {
    #[default]
    #[serde(rename = "trailing")]
    Trailing,
    #[serde(rename = "quadratic")]
    Quadratic,
}

/// The `Quadratic` list of `steps` (1..=`train` timesteps) for `train` training timesteps.
pub(crate) fn quadratic_timesteps(steps: usize, train: usize) -> Result<Vec<i64>> {
    if steps == 0 || steps > train {
        return Err(Error::InvalidInput(format!(
            "step count {steps} must be between 1 and num_train_timesteps ({train})"
        )));
    }
    let top = (train - 1) as f64;
    if steps == 1 {
        return Ok(vec![top as i64]);
    }
    let mut ts: Vec<i64> = (0..steps)
        .map(|k| {
            let u = 1.0 - k as f64 / (steps - 1) as f64;
            (top * u * u).round() as i64
        })
        .collect();
    for k in (0..steps - 1).rev() {
        if ts[k] <= ts[k + 1] {
            ts[k] = ts[k + 1] + 1;
        }
    }
    debug_assert!(ts[0] == top as i64 && ts[steps - 1] == 0);
    Ok(ts)
}

/// diffusers: "close to 0 without being 0 so first sigma is not inf".
const TERMINAL_ALPHA_CUMPROD: f64 = 1.0 / 16_777_216.0;

fn linspace_f64(start: f64, end: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![start];
    }
    (0..n)
        .map(|i| start + (end - start) * i as f64 / (n - 1) as f64)
        .collect()
}

fn betas_f64(cfg: &DdimConfig) -> Vec<f64> {
    let n = cfg.num_train_timesteps;
    match (&cfg.trained_betas, cfg.beta_schedule.as_str()) {
        (Some(b), _) => b.clone(),
        (None, "linear") => linspace_f64(cfg.beta_start, cfg.beta_end, n),
        (None, "scaled_linear") => linspace_f64(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), n)
            .into_iter()
            .map(|s| s * s)
            .collect(),
        (None, _) => {
            let alpha_bar = |t: f64| {
                ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                    .cos()
                    .powi(2)
            };
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect()
        }
    }
}

fn cumprod_f64(xs: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut acc = 1.0;
    xs.map(|x| {
        acc *= x;
        acc
    })
    .collect()
}

/// diffusers `rescale_zero_terminal_snr`, in float64.
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut sqrt_ab: Vec<f64> = cumprod_f64(betas.iter().map(|b| 1.0 - b))
        .into_iter()
        .map(f64::sqrt)
        .collect();
    let (first, last) = (sqrt_ab[0], sqrt_ab[sqrt_ab.len() - 1]);
    let scale = first / (first - last);
    for v in sqrt_ab.iter_mut() {
        *v = (*v - last) * scale;
    }
    let ab: Vec<f64> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    out.extend(ab.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// What the network predicts, for the data-prediction conversion of the solvers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Epsilon,
    V,
    Sample,
}

/// The schedule tables of one model: DDIM's scheduler and the multistep solvers' sigmas.
#[derive(Debug, Clone)]
pub struct Schedule {
    ddim: Ddim,
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    train_sigmas: Vec<f32>,
    target: Target,
    trailing: bool,
    spacing: Spacing,
}

impl Schedule {
    /// The tables of `cfg` (EzAudio's `diff:` section); refuses what `Ddim` refuses.
    pub fn new(cfg: &DdimConfig) -> Result<Self> {
        let ddim = Ddim::new(cfg)?;
        let mut betas = betas_f64(cfg);
        if cfg.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut ac = cumprod_f64(betas.iter().map(|b| 1.0 - b));
        if cfg.rescale_betas_zero_snr {
            if let Some(last) = ac.last_mut() {
                *last = TERMINAL_ALPHA_CUMPROD;
            }
        }
        let train_sigmas = ac.iter().map(|a| ((1.0 - a) / a).sqrt() as f32).collect();
        let target = match cfg.prediction_type.as_str() {
            "epsilon" => Target::Epsilon,
            "v_prediction" => Target::V,
            "sample" => Target::Sample,
            other => {
                return Err(Error::Unsupported(format!(
                    "prediction_type '{other}' for the multistep solvers"
                )))
            }
        };
        Ok(Self {
            ddim,
            betas: betas.iter().map(|&b| b as f32).collect(),
            alphas_cumprod: ac.iter().map(|&a| a as f32).collect(),
            train_sigmas,
            target,
            trailing: cfg.timestep_spacing == "trailing",
            spacing: Spacing::default(),
        })
    }

    /// DDIM, with its own float32 tables (`alphas_cumprod[999] == 0`).
    pub fn ddim(&self) -> &Ddim {
        &self.ddim
    }

    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    /// What the multistep solvers hold: DDIM's, with the terminal 0 replaced by 2^-24.
    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// `sqrt((1 - ac) / ac)` for every training timestep.
    pub fn train_sigmas(&self) -> &[f32] {
        &self.train_sigmas
    }

    pub(crate) fn target(&self) -> Target {
        self.target
    }

    /// diffusers' `set_timesteps(n)` list (the same for all samplers), quirk included: n + 1
    /// entries ending in -1 for 62 step counts in 1..1000 (see [`Schedule::plan`]).
    pub fn timesteps(&self, steps: usize) -> Result<Vec<i64>> {
        self.ddim.timesteps(steps)
    }

    /// This schedule with another [`Spacing`] for [`Schedule::plan`], [`Schedule::sigmas`] and
    /// [`Schedule::solver`] ([`Schedule::timesteps`] stays diffusers' list).
    pub fn with_spacing(mut self, spacing: Spacing) -> Self {
        self.spacing = spacing;
        self
    }

    pub fn spacing(&self) -> Spacing {
        self.spacing
    }

    /// The timesteps of this schedule's [`Spacing`] (trailing: [`Schedule::timesteps`]).
    pub(crate) fn spaced_timesteps(&self, steps: usize) -> Result<Vec<i64>> {
        match self.spacing {
            Spacing::Trailing => self.timesteps(steps),
            Spacing::Quadratic => quadratic_timesteps(steps, self.train_sigmas.len()),
        }
    }

    /// The multistep solvers' `sigmas` after `set_timesteps(n)`: the table at each timestep
    /// (-1 clamped to t = 0, as numpy's `interp` does) and a final 0. With
    /// [`Spacing::Quadratic`], the same at its timesteps.
    pub fn sigmas(&self, steps: usize) -> Result<Vec<f32>> {
        if !self.trailing {
            return Err(Error::Unsupported(format!(
                "the multistep solvers need timestep_spacing 'trailing' (EzAudio's), got '{}'",
                self.ddim.config().timestep_spacing
            )));
        }
        let last = self.train_sigmas.len() as i64 - 1;
        let mut sigmas: Vec<f32> = self
            .spaced_timesteps(steps)?
            .iter()
            .map(|&t| self.train_sigmas[t.clamp(0, last) as usize])
            .collect();
        sigmas.push(0.0);
        Ok(sigmas)
    }
}
