//! Messages and progress on stderr: an animated bar on a terminal, plain lines otherwise (logs,
//! CI, pipes), so scripted use gets readable output without control characters.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use ezaudio_engine::audio::Clip;
use ezaudio_engine::engine::{Engine, JobHandle, JobStatus, ModelStatus};

use super::CliError;

#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    quiet: bool,
    tty: bool,
}

impl Reporter {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
        }
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// Progress and informational lines (hidden by `--quiet`).
    pub fn note(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            crate::errln!("{}", msg.as_ref());
        }
    }

    /// Things the user must see even with `--quiet`.
    pub fn warn(&self, msg: impl AsRef<str>) {
        crate::errln!("warning: {}", msg.as_ref());
    }

    /// A byte-count bar for downloads, hidden when quiet or not on a terminal.
    pub fn bytes_bar(&self, label: &str, total: u64) -> ProgressBar {
        if self.quiet || !self.tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total);
        let style = ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(label.to_string());
        bar
    }

    /// Polls a job until it finishes, showing stage, `step k/n` and an ETA. Prints which device
    /// the engine picked the first time the model is ready.
    pub fn wait_job(
        &self,
        engine: &Engine,
        handle: &JobHandle,
        label: &str,
    ) -> Result<Clip, CliError> {
        let started = Instant::now();
        let mut view = JobView::new(*self, label);
        loop {
            if let Some(outcome) = handle.wait(Duration::from_millis(50)) {
                view.finish();
                return match outcome {
                    Ok(clip) => {
                        self.note(format!(
                            "{label}: done in {:.1} s",
                            started.elapsed().as_secs_f64()
                        ));
                        Ok(clip)
                    }
                    Err(e) => Err(CliError::new(e.to_string())),
                };
            }
            view.show(&handle.status(), engine);
        }
    }
}

/// State of the display of one job.
struct JobView {
    rep: Reporter,
    label: String,
    bar: Option<ProgressBar>,
    last: Option<JobStatus>,
    loading_since: Option<Instant>,
    steps_since: Option<(Instant, u32)>,
    last_line: Instant,
    last_step_printed: Option<u32>,
}

impl JobView {
    fn new(rep: Reporter, label: &str) -> Self {
        Self {
            rep,
            label: label.to_string(),
            bar: None,
            last: None,
            loading_since: None,
            steps_since: None,
            last_line: Instant::now(),
            last_step_printed: None,
        }
    }

    fn show(&mut self, status: &JobStatus, engine: &Engine) {
        let stage_changed = match (&self.last, status) {
            (Some(JobStatus::Step { .. }), JobStatus::Step { .. }) => false,
            (Some(a), b) => std::mem::discriminant(a) != std::mem::discriminant(b),
            (None, _) => true,
        };
        if stage_changed {
            self.enter(status, engine);
        }
        if let JobStatus::Step { k, n } = *status {
            self.step(k, n);
        }
        self.last = Some(status.clone());
    }

    fn enter(&mut self, status: &JobStatus, engine: &Engine) {
        if let Some(since) = self.loading_since.take() {
            if let ModelStatus::Ready { device } = engine.model_status() {
                self.rep.note(format!(
                    "model loaded in {:.1} s; running on {device}",
                    since.elapsed().as_secs_f64()
                ));
            }
        }
        let what = match status {
            JobStatus::Queued => "queued",
            JobStatus::LoadingModel => {
                self.loading_since = Some(Instant::now());
                "loading the model"
            }
            JobStatus::EncodingText => "encoding the prompt",
            JobStatus::Step { .. } => return,
            JobStatus::Decoding => "decoding audio",
            _ => return,
        };
        if let Some(bar) = &self.bar {
            bar.set_message(what);
        } else {
            self.rep.note(format!("{}: {what}", self.label));
        }
    }

    fn step(&mut self, k: u32, n: u32) {
        // Stage::Step { k } is reported as step k starts: k steps are complete.
        let (t0, k0) = *self.steps_since.get_or_insert((Instant::now(), k));
        let eta = (k > k0).then(|| t0.elapsed().mul_f64((n - k) as f64 / (k - k0) as f64));
        if self.rep.quiet {
            return;
        }
        if self.rep.tty {
            let bar = self.bar.get_or_insert_with(|| {
                let bar = ProgressBar::new(n as u64);
                let style =
                    ProgressStyle::with_template("{prefix} [{bar:30}] step {pos}/{len} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> ");
                bar.set_style(style);
                bar.set_prefix(self.label.clone());
                bar
            });
            bar.set_position(k as u64);
            bar.set_message(
                eta.map(|e| format!("ETA {}", fmt_duration(e)))
                    .unwrap_or_default(),
            );
            return;
        }
        // Plain lines: about every 10 % or every 5 s, whichever comes first.
        let every = (n / 10).max(1);
        let due = self.last_step_printed.is_none_or(|p| k >= p + every)
            || self.last_line.elapsed() > Duration::from_secs(5);
        if due && self.last_step_printed != Some(k) {
            let eta = eta
                .map(|e| format!(", ETA {}", fmt_duration(e)))
                .unwrap_or_default();
            crate::errln!("{}: step {k}/{n}{eta}", self.label);
            self.last_step_printed = Some(k);
            self.last_line = Instant::now();
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.0} s")
    } else {
        format!("{}:{:02} min", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// `1234567` -> `1.2 MB`.
pub fn fmt_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}
