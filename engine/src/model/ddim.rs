//! The sampler: diffusers' `DDIMScheduler` exactly as EzAudio configures it, plus the
//! classifier-free-guidance helpers of `src/inference.py` (`guide`, `rescale_noise_cfg`).
//!
//! Everything scalar is done the way PyTorch does it on the CPU, so that the tables and the
//! per-step coefficients land on the same float32 values as the reference:
//! * `torch.linspace(.., dtype=float32)` computes `start + step*i` for the first half and
//!   `end - step*(n-1-i)` for the second half, in float32 with a fused multiply-add;
//! * `torch.cumprod` on a float32 CPU tensor accumulates in float64 and rounds each output;
//! * every other table/coefficient operation is a single float32 operation (0-d tensors).
//!
//! What stays different: PyTorch's CPU `sqrt` (MKL VML) is not always correctly rounded, while
//! ours is, so a few table entries differ by an ulp. That is invisible in `alphas_cumprod`
//! (max abs error ~4e-7) but the last betas of the zero-SNR rescale are ill-conditioned
//! (`1 - ab[i]/ab[i-1]` of tiny, cancelled values) and differ by up to ~3e-6.

use candle_core::{DType, Tensor};
use serde::Deserialize;

use crate::{Error, Result};

fn default_num_train_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    0.0001
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_prediction_type() -> String {
    "epsilon".into()
}
fn default_timestep_spacing() -> String {
    "leading".into()
}
fn default_true() -> bool {
    true
}
fn default_one() -> f64 {
    1.0
}
fn default_dynamic_thresholding_ratio() -> f64 {
    0.995
}

/// `DDIMScheduler` constructor arguments, with diffusers' defaults for every missing key
/// (the EzAudio yaml `diff:` section only sets some of them). Unknown keys (`_class_name`,
/// `_diffusers_version`, ...) are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DdimConfig {
    #[serde(default = "default_num_train_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`.
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_true")]
    pub clip_sample: bool,
    #[serde(default = "default_one")]
    pub clip_sample_range: f64,
    #[serde(default = "default_true")]
    pub set_alpha_to_one: bool,
    #[serde(default)]
    pub steps_offset: usize,
    /// `epsilon`, `v_prediction` or `sample`.
    #[serde(default = "default_prediction_type")]
    pub prediction_type: String,
    /// Dynamic thresholding is not implemented (`validate` rejects it).
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default = "default_dynamic_thresholding_ratio")]
    pub dynamic_thresholding_ratio: f64,
    #[serde(default = "default_one")]
    pub sample_max_value: f64,
    /// `leading`, `trailing` or `linspace`.
    #[serde(default = "default_timestep_spacing")]
    pub timestep_spacing: String,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prediction {
    Epsilon,
    V,
    Sample,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spacing {
    Leading,
    Trailing,
    Linspace,
}

impl DdimConfig {
    /// The `diff:` section of `ckpts/ezaudio-xl.yml` / `ezaudio-l.yml`.
    pub fn ezaudio() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            clip_sample: false,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: "v_prediction".into(),
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: "trailing".into(),
            rescale_betas_zero_snr: true,
        }
    }

    /// Checks every option; anything this port does not implement is `Error::Unsupported`,
    /// nonsensical values are `Error::InvalidInput`.
    pub fn validate(&self) -> Result<()> {
        self.prediction()?;
        self.spacing()?;
        let n = self.num_train_timesteps;
        if n == 0 {
            return Err(Error::InvalidInput(
                "DDIM num_train_timesteps must be at least 1".into(),
            ));
        }
        if i64::try_from(n).is_err() || n > (1 << 24) {
            return Err(Error::InvalidInput(format!(
                "DDIM num_train_timesteps {n} is too large"
            )));
        }
        match &self.trained_betas {
            Some(b) => {
                if b.len() != n {
                    return Err(Error::InvalidInput(format!(
                        "DDIM trained_betas has {} entries, num_train_timesteps is {n}",
                        b.len()
                    )));
                }
                if b.iter().any(|v| !v.is_finite() || *v < 0.0 || *v > 1.0) {
                    return Err(Error::InvalidInput("DDIM trained_betas must lie in [0, 1]".into()));
                }
            }
            None => match self.beta_schedule.as_str() {
                "linear" | "scaled_linear" => {
                    let ok = |v: f64| v.is_finite() && (0.0..1.0).contains(&v);
                    if !ok(self.beta_start) || !ok(self.beta_end) {
                        return Err(Error::InvalidInput(format!(
                            "DDIM beta_start {} / beta_end {} must lie in [0, 1)",
                            self.beta_start, self.beta_end
                        )));
                    }
                }
                "squaredcos_cap_v2" => {}
                other => {
                    return Err(Error::Unsupported(format!(
                        "DDIM beta_schedule '{other}' (supported: linear, scaled_linear, squaredcos_cap_v2)"
                    )))
                }
            },
        }
        if self.rescale_betas_zero_snr && n < 2 {
            return Err(Error::InvalidInput(
                "DDIM rescale_betas_zero_snr needs num_train_timesteps >= 2".into(),
            ));
        }
        if self.thresholding {
            return Err(Error::Unsupported(
                "DDIM dynamic thresholding (thresholding: true)".into(),
            ));
        }
        if self.clip_sample && !(self.clip_sample_range.is_finite() && self.clip_sample_range > 0.0)
        {
            return Err(Error::InvalidInput(format!(
                "DDIM clip_sample_range {} must be a positive number",
                self.clip_sample_range
            )));
        }
        Ok(())
    }

    fn prediction(&self) -> Result<Prediction> {
        match self.prediction_type.as_str() {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::V),
            "sample" => Ok(Prediction::Sample),
            other => Err(Error::Unsupported(format!(
                "DDIM prediction_type '{other}' (supported: epsilon, v_prediction, sample)"
            ))),
        }
    }

    fn spacing(&self) -> Result<Spacing> {
        match self.timestep_spacing.as_str() {
            "leading" => Ok(Spacing::Leading),
            "trailing" => Ok(Spacing::Trailing),
            "linspace" => Ok(Spacing::Linspace),
            other => Err(Error::Unsupported(format!(
                "DDIM timestep_spacing '{other}' (supported: leading, trailing, linspace)"
            ))),
        }
    }
}

/// The float32 scalars of one DDIM step, as diffusers computes them (0-d float32 tensors).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdimCoefficients {
    /// `t - num_train_timesteps // num_inference_steps` (negative: use `final_alpha_cumprod`).
    pub prev_timestep: i64,
    pub alpha_prod_t: f32,
    pub alpha_prod_t_prev: f32,
    /// `(1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)`.
    pub variance: f32,
    /// `eta * sqrt(variance)`.
    pub std_dev: f32,
    /// `1 - a_prev - std_dev^2` before the clamp; may be a tiny negative rounding residue.
    pub direction_radicand: f32,
}

/// `prev_sample` and the x0 estimate (`pred_original_sample`) of one step.
#[derive(Debug, Clone)]
pub struct DdimStepOutput {
    pub prev_sample: Tensor,
    pub pred_original_sample: Tensor,
}

/// diffusers `DDIMScheduler` (no internal state: the step count is passed to every call).
#[derive(Debug, Clone)]
pub struct Ddim {
    cfg: DdimConfig,
    prediction: Prediction,
    spacing: Spacing,
    betas: Vec<f32>,
    alphas_cumprod: Vec<f32>,
    final_alpha_cumprod: f32,
}

/// `torch.linspace(start, end, n, dtype=float32)` on the CPU.
fn linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
}

/// `torch.cumprod` of a float32 CPU tensor: float64 accumulator, each output rounded.
fn cumprod_f32(xs: &[f32]) -> Vec<f32> {
    let mut acc = 1f64;
    xs.iter()
        .map(|&x| {
            acc *= x as f64;
            acc as f32
        })
        .collect()
}

/// diffusers `betas_for_alpha_bar` (cosine), computed in float64 then stored as float32.
fn cosine_betas(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// diffusers `rescale_zero_terminal_snr`, in float32 like the reference.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt_ab: Vec<f32> = cumprod_f32(&alphas).iter().map(|a| a.sqrt()).collect();
    let first = sqrt_ab[0];
    let last = sqrt_ab[sqrt_ab.len() - 1];
    // Shift so the last value is zero, then scale so the first one is back where it was.
    let scale = first / (first - last);
    for v in sqrt_ab.iter_mut() {
        *v = (*v - last) * scale;
    }
    let ab: Vec<f32> = sqrt_ab.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(ab.len());
    out.push(1.0 - ab[0]);
    out.extend(ab.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// numpy's `round` (half to even), then to i64 (values here are small and finite).
fn round_half_even(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// `x / c` with a float32 0-d divisor, as a true division (candle's `Tensor / f64` multiplies
/// by the reciprocal).
fn div_scalar(x: &Tensor, c: f32) -> Result<Tensor> {
    let c = Tensor::new(c, x.device())?.to_dtype(x.dtype())?;
    Ok(x.broadcast_div(&c)?)
}

impl Ddim {
    pub fn new(cfg: &DdimConfig) -> Result<Self> {
        cfg.validate()?;
        let n = cfg.num_train_timesteps;
        let mut betas = match (&cfg.trained_betas, cfg.beta_schedule.as_str()) {
            (Some(b), _) => b.iter().map(|&v| v as f32).collect(),
            (None, "linear") => linspace_f32(cfg.beta_start, cfg.beta_end, n),
            (None, "scaled_linear") => linspace_f32(cfg.beta_start.sqrt(), cfg.beta_end.sqrt(), n)
                .into_iter()
                .map(|s| s * s)
                .collect(),
            (None, _) => cosine_betas(n),
        };
        if cfg.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod = cumprod_f32(&alphas);
        let final_alpha_cumprod = if cfg.set_alpha_to_one {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(Self {
            cfg: cfg.clone(),
            prediction: cfg.prediction()?,
            spacing: cfg.spacing()?,
            betas,
            alphas_cumprod,
            final_alpha_cumprod,
        })
    }

    pub fn config(&self) -> &DdimConfig {
        &self.cfg
    }

    pub fn betas(&self) -> &[f32] {
        &self.betas
    }

    pub fn alphas_cumprod(&self) -> &[f32] {
        &self.alphas_cumprod
    }

    /// `alphas_cumprod` used when the previous timestep is negative.
    pub fn final_alpha_cumprod(&self) -> f32 {
        self.final_alpha_cumprod
    }

    fn check_steps(&self, num_inference_steps: usize) -> Result<()> {
        let t = self.cfg.num_train_timesteps;
        if num_inference_steps == 0 || num_inference_steps > t {
            return Err(Error::InvalidInput(format!(
                "DDIM step count {num_inference_steps} must be between 1 and num_train_timesteps ({t})"
            )));
        }
        Ok(())
    }

    /// diffusers `set_timesteps(n)`: the timesteps, in sampling order (descending).
    ///
    /// Reproduces numpy exactly, quirks included: with `trailing` spacing
    /// `np.arange(T, 0, -T/n)` has n + 1 entries when `T / (T/n)` rounds above n in float64
    /// (n = 61, 103, 121, ... for T = 1000) and the extra last timestep is -1, which diffusers
    /// then indexes Python-style (`alphas_cumprod[-1]`); [`Ddim::step`] does the same.
    pub fn timesteps(&self, num_inference_steps: usize) -> Result<Vec<i64>> {
        self.check_steps(num_inference_steps)?;
        let n = num_inference_steps;
        let t = self.cfg.num_train_timesteps;
        let ts = match self.spacing {
            Spacing::Linspace => {
                // np.linspace(0, T-1, n): i * step + start, the endpoint set exactly.
                let stop = (t - 1) as f64;
                let step = if n > 1 { stop / (n - 1) as f64 } else { 0.0 };
                (0..n)
                    .rev()
                    .map(|i| {
                        if n > 1 && i == n - 1 {
                            stop
                        } else {
                            i as f64 * step
                        }
                    })
                    .map(round_half_even)
                    .collect()
            }
            Spacing::Leading => {
                let ratio = (t / n) as i64;
                let offset = self.cfg.steps_offset as i64;
                (0..n as i64).rev().map(|i| i * ratio + offset).collect()
            }
            Spacing::Trailing => {
                // np.arange(T, 0, -ratio): length ceil(-T / -ratio); numpy fills
                // start + i * (v1 - v0) with v1 = start + step.
                let start = t as f64;
                let step = -(t as f64 / n as f64);
                let len = ((0.0 - start) / step).ceil() as usize;
                let delta = (start + step) - start;
                (0..len)
                    .map(|i| round_half_even(start + i as f64 * delta) - 1)
                    .collect()
            }
        };
        Ok(ts)
    }

    fn alpha_at(&self, t: i64) -> Result<f32> {
        let n = self.alphas_cumprod.len() as i64;
        // Python-style negative indexing, as `alphas_cumprod[t]` does in diffusers.
        let idx = if t < 0 { t + n } else { t };
        if !(0..n).contains(&idx) {
            return Err(Error::InvalidInput(format!(
                "DDIM timestep {t} is outside 0..{n}"
            )));
        }
        Ok(self.alphas_cumprod[idx as usize])
    }

    /// The scalars of `step(t)` for `num_inference_steps` (diffusers float32 arithmetic).
    pub fn coefficients(
        &self,
        t: i64,
        num_inference_steps: usize,
        eta: f64,
    ) -> Result<DdimCoefficients> {
        self.check_steps(num_inference_steps)?;
        // The integer-division quirk: not necessarily the next entry of `timesteps`.
        let prev_timestep = t - (self.cfg.num_train_timesteps / num_inference_steps) as i64;
        self.coefficients_to(t, prev_timestep, eta)
    }

    /// The scalars of a step from `t` to `prev_timestep` (negative: to
    /// `final_alpha_cumprod`), for a timestep list other than diffusers' own.
    pub fn coefficients_to(
        &self,
        t: i64,
        prev_timestep: i64,
        eta: f64,
    ) -> Result<DdimCoefficients> {
        if !(eta.is_finite() && eta >= 0.0) {
            return Err(Error::InvalidInput(format!(
                "DDIM eta {eta} must be a finite number >= 0"
            )));
        }
        let a_t = self.alpha_at(t)?;
        let a_prev = if prev_timestep >= 0 {
            self.alpha_at(prev_timestep)?
        } else {
            self.final_alpha_cumprod
        };
        let variance = ((1.0 - a_prev) / (1.0 - a_t)) * (1.0 - a_t / a_prev);
        let std_dev = eta as f32 * variance.sqrt();
        let direction_radicand = 1.0 - a_prev - std_dev * std_dev;
        Ok(DdimCoefficients {
            prev_timestep,
            alpha_prod_t: a_t,
            alpha_prod_t_prev: a_prev,
            variance,
            std_dev,
            direction_radicand,
        })
    }

    /// One DDIM step: diffusers `step(model_output, t, sample, eta, variance_noise=noise).prev_sample`.
    ///
    /// `eta > 0` needs `noise` (the `variance_noise`, same shape as `sample`).
    ///
    /// Unlike the reference, the result is finite at every step count: the direction
    /// coefficient `sqrt(1 - a_prev - std^2)` has its radicand clamped at 0. With eta = 1 at the
    /// terminal timestep (a_t = 0, zero-SNR schedule) the radicand is mathematically exactly 0
    /// and what float32 leaves is a rounding residue of either sign; the reference takes the
    /// square root of it and returns NaN for the whole latent when it is negative (e.g. 50
    /// steps). Where the radicand is not negative the clamp changes nothing.
    pub fn step(
        &self,
        model_output: &Tensor,
        t: i64,
        num_inference_steps: usize,
        sample: &Tensor,
        eta: f64,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self
            .step_output(model_output, t, num_inference_steps, sample, eta, noise)?
            .prev_sample)
    }

    /// [`Ddim::step`] that also returns the x0 estimate (`pred_original_sample`).
    pub fn step_output(
        &self,
        model_output: &Tensor,
        t: i64,
        num_inference_steps: usize,
        sample: &Tensor,
        eta: f64,
        noise: Option<&Tensor>,
    ) -> Result<DdimStepOutput> {
        let c = self.coefficients(t, num_inference_steps, eta)?;
        self.apply(&c, model_output, sample, eta, noise)
    }

    /// [`Ddim::step`] from `t` to an explicit `prev_timestep` (negative: the last step, to
    /// `final_alpha_cumprod`) instead of `t - num_train_timesteps // n`: DDIM on a timestep
    /// list of another spacing ([`crate::model::sampler::Spacing`]).
    pub fn step_to(
        &self,
        model_output: &Tensor,
        t: i64,
        prev_timestep: i64,
        sample: &Tensor,
        eta: f64,
        noise: Option<&Tensor>,
    ) -> Result<Tensor> {
        let c = self.coefficients_to(t, prev_timestep, eta)?;
        Ok(self
            .apply(&c, model_output, sample, eta, noise)?
            .prev_sample)
    }

    fn apply(
        &self,
        c: &DdimCoefficients,
        model_output: &Tensor,
        sample: &Tensor,
        eta: f64,
        noise: Option<&Tensor>,
    ) -> Result<DdimStepOutput> {
        if model_output.dims() != sample.dims() {
            return Err(Error::InvalidInput(format!(
                "DDIM model output shape {:?} differs from sample shape {:?}",
                model_output.dims(),
                sample.dims()
            )));
        }
        let noise = if eta > 0.0 {
            let n = noise.ok_or_else(|| {
                Error::InvalidInput(format!("DDIM step with eta {eta} > 0 needs variance noise"))
            })?;
            if n.dims() != sample.dims() {
                return Err(Error::InvalidInput(format!(
                    "DDIM variance noise shape {:?} differs from sample shape {:?}",
                    n.dims(),
                    sample.dims()
                )));
            }
            Some(n.to_dtype(sample.dtype())?)
        } else {
            None
        };
        let model_output = model_output.to_dtype(sample.dtype())?;

        // 0-d float32 coefficients times tensors, as in diffusers.
        let sqrt_a_t = c.alpha_prod_t.sqrt() as f64;
        let sqrt_b_t = (1.0 - c.alpha_prod_t).sqrt() as f64;
        let (x0, eps) = match self.prediction {
            Prediction::V => {
                let x0 = ((sample * sqrt_a_t)? - (&model_output * sqrt_b_t)?)?;
                let eps = ((&model_output * sqrt_a_t)? + (sample * sqrt_b_t)?)?;
                (x0, eps)
            }
            Prediction::Epsilon => {
                let x0 = div_scalar(&(sample - (&model_output * sqrt_b_t)?)?, sqrt_a_t as f32)?;
                (x0, model_output)
            }
            Prediction::Sample => {
                let eps = div_scalar(&(sample - (&model_output * sqrt_a_t)?)?, sqrt_b_t as f32)?;
                (model_output, eps)
            }
        };
        let x0 = if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range as f32;
            x0.clamp(-r, r)?
        } else {
            x0
        };
        let direction = c.direction_radicand.max(0.0).sqrt() as f64;
        let mut prev = ((&x0 * c.alpha_prod_t_prev.sqrt() as f64)? + (eps * direction)?)?;
        if let Some(noise) = noise {
            prev = (prev + (noise * c.std_dev as f64)?)?;
        }
        Ok(DdimStepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    /// diffusers `add_noise` for one timestep: `sqrt(a_t) * original + sqrt(1 - a_t) * noise`.
    /// (EzAudio's `load_models` calls it once as a warm-up and discards the result; editing
    /// and inpainting go through the MaskDiT `gt` path, not through this.)
    pub fn add_noise(&self, original: &Tensor, noise: &Tensor, t: i64) -> Result<Tensor> {
        if original.dims() != noise.dims() {
            return Err(Error::InvalidInput(format!(
                "add_noise: noise shape {:?} differs from sample shape {:?}",
                noise.dims(),
                original.dims()
            )));
        }
        let a = self.alpha_at(t)?;
        let noise = noise.to_dtype(original.dtype())?;
        Ok(((original * a.sqrt() as f64)? + (noise * (1.0 - a).sqrt() as f64)?)?)
    }
}

/// Classifier-free guidance: `uncond + g * (text - uncond)`.
pub fn guide(text: &Tensor, uncond: &Tensor, guidance: f64) -> Result<Tensor> {
    if text.dims() != uncond.dims() {
        return Err(Error::InvalidInput(format!(
            "guidance: conditional shape {:?} differs from unconditional shape {:?}",
            text.dims(),
            uncond.dims()
        )));
    }
    Ok(((text - uncond)?.affine(guidance, 0.0)? + uncond)?)
}

/// Per-sample standard deviation over every non-batch dim (unbiased), shaped `(B, 1, 1, ..)`,
/// in float32 (two-pass, for accuracy close to PyTorch's float64 Welford).
fn per_sample_std(x: &Tensor) -> Result<Tensor> {
    let b = x.dim(0)?;
    let n = x.elem_count() / b.max(1);
    if n < 2 {
        return Err(Error::InvalidInput(format!(
            "rescale_noise_cfg needs at least 2 values per sample, shape is {:?}",
            x.dims()
        )));
    }
    let flat = x.to_dtype(DType::F32)?.reshape((b, n))?;
    let centered = flat.broadcast_sub(&flat.mean_keepdim(1)?)?;
    let var = (centered.sqr()?.sum_keepdim(1)? / (n - 1) as f64)?;
    let mut shape = vec![1usize; x.rank()];
    shape[0] = b;
    Ok(var.sqrt()?.reshape(shape)?)
}

/// diffusers / EzAudio `rescale_noise_cfg`: `phi * pred * std(text)/std(pred) + (1 - phi) * pred`,
/// the std taken per sample over all non-batch dims. `phi == 0` returns `pred` unchanged.
pub fn rescale_noise_cfg(pred: &Tensor, text: &Tensor, phi: f64) -> Result<Tensor> {
    if phi == 0.0 {
        return Ok(pred.clone());
    }
    if pred.dims() != text.dims() || pred.rank() < 2 {
        return Err(Error::InvalidInput(format!(
            "rescale_noise_cfg: guided shape {:?} and conditional shape {:?} must match, with a batch dim",
            pred.dims(),
            text.dims()
        )));
    }
    // A constant prediction has std 0; the reference then divides by zero. Keep it finite.
    let std_pred = per_sample_std(pred)?.clamp(f32::MIN_POSITIVE, f32::INFINITY)?;
    let ratio = (per_sample_std(text)? / std_pred)?.to_dtype(pred.dtype())?;
    let rescaled = pred.broadcast_mul(&ratio)?;
    Ok(((rescaled * phi)? + (pred * (1.0 - phi))?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn ddim() -> Ddim {
        Ddim::new(&DdimConfig::ezaudio()).unwrap()
    }

    #[test]
    fn validate_rejects_unsupported_options() {
        let bad = |f: fn(&mut DdimConfig)| {
            let mut c = DdimConfig::ezaudio();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(matches!(
            bad(|c| c.beta_schedule = "sigmoid".into()),
            Error::Unsupported(_)
        ));
        assert!(matches!(
            bad(|c| c.prediction_type = "flow".into()),
            Error::Unsupported(_)
        ));
        assert!(matches!(
            bad(|c| c.timestep_spacing = "karras".into()),
            Error::Unsupported(_)
        ));
        assert!(matches!(
            bad(|c| c.thresholding = true),
            Error::Unsupported(_)
        ));
        assert!(matches!(
            bad(|c| c.num_train_timesteps = 0),
            Error::InvalidInput(_)
        ));
        assert!(matches!(
            bad(|c| c.beta_end = f64::NAN),
            Error::InvalidInput(_)
        ));
        assert!(matches!(
            bad(|c| c.trained_betas = Some(vec![0.1; 3])),
            Error::InvalidInput(_)
        ));
        assert!(DdimConfig::ezaudio().validate().is_ok());
        assert!(Ddim::new(&DdimConfig {
            beta_schedule: "bogus".into(),
            ..DdimConfig::ezaudio()
        })
        .is_err());
    }

    #[test]
    fn config_defaults_follow_diffusers() {
        let c: DdimConfig = serde_json::from_str(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
        assert_eq!(c.num_train_timesteps, 1000);
        assert_eq!(c.beta_schedule, "linear");
        assert_eq!(c.prediction_type, "epsilon");
        assert_eq!(c.timestep_spacing, "leading");
        assert!(
            c.set_alpha_to_one && c.clip_sample && !c.thresholding && !c.rescale_betas_zero_snr
        );
        assert_eq!(c.steps_offset, 0);
    }

    #[test]
    fn timesteps_reject_bad_counts() {
        let d = ddim();
        assert!(matches!(d.timesteps(0), Err(Error::InvalidInput(_))));
        assert!(matches!(d.timesteps(1001), Err(Error::InvalidInput(_))));
        assert_eq!(d.timesteps(1000).unwrap().len(), 1000);
    }

    #[test]
    fn timesteps_all_spacings() {
        let d = ddim();
        assert_eq!(d.timesteps(1).unwrap(), vec![999]);
        assert_eq!(d.timesteps(4).unwrap(), vec![999, 749, 499, 249]);
        // numpy arange quirk: 62 entries ending in -1 for n = 61.
        let t61 = d.timesteps(61).unwrap();
        assert_eq!((t61.len(), t61[0], t61[60], t61[61]), (62, 999, 15, -1));

        let lead = Ddim::new(&DdimConfig {
            timestep_spacing: "leading".into(),
            steps_offset: 1,
            ..DdimConfig::ezaudio()
        })
        .unwrap();
        assert_eq!(lead.timesteps(4).unwrap(), vec![751, 501, 251, 1]);
        let lin = Ddim::new(&DdimConfig {
            timestep_spacing: "linspace".into(),
            ..DdimConfig::ezaudio()
        })
        .unwrap();
        assert_eq!(lin.timesteps(3).unwrap(), vec![999, 500, 0]);
        assert_eq!(lin.timesteps(1).unwrap(), vec![0]);
    }

    #[test]
    fn zero_terminal_snr_and_schedules() {
        let d = ddim();
        assert_eq!(d.alphas_cumprod()[999], 0.0);
        assert_eq!(d.final_alpha_cumprod(), 1.0);
        let lin = Ddim::new(&DdimConfig {
            beta_schedule: "linear".into(),
            rescale_betas_zero_snr: false,
            ..DdimConfig::ezaudio()
        })
        .unwrap();
        assert!((lin.betas()[0] - 0.00085).abs() < 1e-9 && (lin.betas()[999] - 0.012).abs() < 1e-9);
        let cos = Ddim::new(&DdimConfig {
            beta_schedule: "squaredcos_cap_v2".into(),
            ..DdimConfig::ezaudio()
        });
        assert!(cos.is_ok());
    }

    #[test]
    fn step_needs_noise_when_eta_positive() -> Result<()> {
        let d = ddim();
        let x = Tensor::ones((1, 2, 3), DType::F32, &Device::Cpu)?;
        assert!(matches!(
            d.step(&x, 999, 10, &x, 1.0, None),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            d.step(&x, 999, 0, &x, 0.0, None),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            d.step(&x, 1000, 10, &x, 0.0, None),
            Err(Error::InvalidInput(_))
        ));
        let bad = Tensor::ones((1, 2, 4), DType::F32, &Device::Cpu)?;
        assert!(matches!(
            d.step(&x, 999, 10, &x, 1.0, Some(&bad)),
            Err(Error::InvalidInput(_))
        ));
        assert!(d.step(&x, 999, 10, &x, 0.0, None).is_ok());
        Ok(())
    }

    #[test]
    fn rescale_zero_phi_is_identity() -> Result<()> {
        let x = Tensor::arange(0f32, 6.0, &Device::Cpu)?.reshape((2, 3))?;
        let y = rescale_noise_cfg(&x, &x.affine(2.0, 1.0)?, 0.0)?;
        assert_eq!(y.to_vec2::<f32>()?, x.to_vec2::<f32>()?);
        Ok(())
    }
}
