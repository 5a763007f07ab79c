//! What the editor reads about work it does not do itself: each pad's job ([`Progress`],
//! [`JobView`] and the [`StepClock`] behind its time estimate), the model ([`ModelView`]) and
//! its download ([`Download`]). The generation thread writes these into [`crate::shared`];
//! the editor only reads them. Plain data, so both sides and the tests can build them.

use ezaudio_engine::engine::{JobError, JobStatus};
use ezaudio_engine::install::Official;

/// A pad's generation state, as the editor shows it: idle, or the status of its latest job as
/// the engine reports it (the engine's own type, so the two cannot drift apart).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Progress {
    #[default]
    Idle,
    Job(JobStatus),
}

impl Progress {
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Job(s) if !s.is_finished())
    }

    /// A job that could not even be submitted (its message says why).
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Job(JobStatus::Failed(JobError::Failed(message.into())))
    }
}

impl From<JobStatus> for Progress {
    fn from(status: JobStatus) -> Self {
        Self::Job(status)
    }
}

/// More about a pad's running work than [`Progress`] says (for the editor).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobView {
    /// Estimated seconds until the pad's work is done (from the step timing).
    pub eta_s: Option<f32>,
    /// While variations run: (finished, total).
    pub variations: Option<(usize, usize)>,
}

/// The model as the editor shows it: a status line, and what to do when it is missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelView {
    /// `Model: <ModelStatus>` (not loaded / loading / ready on device / error).
    pub line: String,
    /// The model is not installed: the install instructions.
    pub missing: Option<String>,
    /// The official model the Download button fetches (None: a custom folder is configured).
    pub downloadable: Option<Official>,
    pub download: Download,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub enum Download {
    #[default]
    Idle,
    /// File `index` of `files`, its name and bytes.
    Running {
        file: String,
        index: usize,
        files: usize,
        done: u64,
        total: u64,
    },
    Done(String),
    Failed(String),
}

/// What a denoising step costs on this machine, learned from the jobs that ran, so the editor
/// can say what a draft and a final will take before either runs. Kept per unit of work — a
/// second of audio through one DiT branch — because a step's cost grows with the clip's length,
/// and a guided step runs the DiT on two branches (conditional and unconditional).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepCost {
    per_unit_s: Option<f64>,
}

impl StepCost {
    /// Units of work in one step of a job making `seconds` of audio with `guidance`.
    pub fn units(seconds: f32, guidance: f32) -> f64 {
        let branches = if guidance > 0.0 { 2.0 } else { 1.0 };
        f64::from(seconds.max(0.1)) * branches
    }

    /// A running job of `units` per step takes `per_step_s` per step.
    pub fn learn(&mut self, per_step_s: f64, units: f64) {
        let rate = per_step_s / units;
        if rate.is_finite() && rate > 0.0 {
            self.per_unit_s = Some(rate);
        }
    }

    /// Expected denoising time of a job of `steps` steps (None before any step was timed).
    pub fn expected_s(&self, steps: u32, seconds: f32, guidance: f32) -> Option<f32> {
        self.per_unit_s
            .map(|r| (r * Self::units(seconds, guidance) * f64::from(steps)) as f32)
    }
}

/// Learns how long a denoising step takes, to estimate the time left. Fed with the step
/// counter of the running job and a clock reading (seconds, any origin).
#[derive(Debug, Clone, Default)]
pub struct StepClock {
    /// First and latest step seen of the current job, with their times.
    first: Option<(u32, f64)>,
    last: Option<(u32, f64)>,
    /// Seconds per step, kept across jobs (variations run one after another).
    per_step: Option<f64>,
}

impl StepClock {
    /// A new job is running: its steps are timed from its first step seen.
    pub fn start_job(&mut self) {
        self.first = None;
        self.last = None;
    }

    pub fn observe(&mut self, k: u32, now: f64) {
        let Some((k0, t0)) = self.first else {
            self.first = Some((k, now));
            return;
        };
        if self.last.is_some_and(|(kl, _)| k <= kl) || k <= k0 {
            return;
        }
        self.last = Some((k, now));
        let rate = (now - t0) / (k - k0) as f64;
        if rate.is_finite() && rate >= 0.0 {
            self.per_step = Some(rate);
        }
    }

    /// Seconds per step of the current job, once two of its steps were timed (not the rate
    /// carried over from an earlier job, which may have been longer or shorter).
    pub fn job_per_step_s(&self) -> Option<f64> {
        self.last.and(self.per_step)
    }

    /// Seconds left: the rest of this job (at step `k` of `n`) plus `queued` jobs of `n`
    /// steps. None until two steps were timed.
    pub fn remaining_s(&self, k: u32, n: u32, queued: usize) -> Option<f32> {
        let steps = n.saturating_sub(k) as f64 + queued as f64 * n as f64;
        self.per_step.map(|s| (s * steps) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_clock_estimates_time_left() {
        let mut c = StepClock::default();
        c.observe(1, 10.0);
        assert_eq!(c.remaining_s(1, 11, 0), None);
        c.observe(3, 11.0); // 0.5 s per step
        assert_eq!(c.remaining_s(3, 11, 0), Some(4.0));
        assert_eq!(c.remaining_s(3, 11, 2), Some(15.0));
        c.observe(3, 50.0); // same step again: ignored
        assert_eq!(c.remaining_s(3, 11, 0), Some(4.0));
        // The next job keeps the rate until it has its own.
        c.start_job();
        c.observe(1, 60.0);
        assert_eq!(c.remaining_s(1, 11, 0), Some(5.0));
        assert_eq!(
            c.job_per_step_s(),
            None,
            "the carried rate is not this job's"
        );
        c.observe(2, 61.0);
        assert_eq!(c.remaining_s(2, 11, 0), Some(9.0));
    }

    #[test]
    fn step_cost_scales_with_length_guidance_and_steps() {
        let mut c = StepCost::default();
        assert_eq!(c.expected_s(25, 10.0, 5.0), None);
        // 0.8 s per guided step of a 4 s clip: 0.1 s per second of audio per branch.
        c.learn(0.8, StepCost::units(4.0, 5.0));
        let close = |a: Option<f32>, b: f32| (a.unwrap() - b).abs() < 1e-4;
        assert!(close(c.expected_s(25, 10.0, 5.0), 50.0));
        assert!(close(c.expected_s(100, 10.0, 5.0), 200.0));
        assert!(
            close(c.expected_s(25, 10.0, 0.0), 25.0),
            "unguided: one branch"
        );
        c.learn(f64::NAN, 1.0);
        c.learn(0.0, 1.0);
        assert!(
            close(c.expected_s(1, 1.0, 0.0), 0.1),
            "nonsense timings are ignored"
        );
    }
}
