//! The generation room: the per-instance generation thread (the runner, here) submits jobs to
//! the engine, polls them, and turns finished clips into playable pads (store + history,
//! resample, publish). It also keeps the slots collected and republishes after state loads.
//! It outlives the editor, so generation goes on with the window closed, and results that
//! arrive after deactivate are kept.
//!
//! * [`backend`]: where jobs go (the engine, or a fake in tests).
//! * [`follow`]: jobs that a finished sidechain capture starts.
//! * [`download`]: the model download, on its own thread.
//!
//! What a job contains is decided in [`crate::jobs`]; what the editor sees of the work is in
//! [`crate::status`], written here into [`Shared`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ezaudio_engine::engine::{compute, Job, JobError, JobStatus};

use crate::jobs::random_seed;
use crate::layout::PAD_COUNT;
use crate::shared::Shared;
use crate::status::{JobView, Progress, StepClock, StepCost};

pub mod backend;
pub mod download;
pub mod follow;

use backend::{Backend, PendingJob};

/// How often pending jobs are polled and slots collected.
const TICK: Duration = Duration::from_millis(25);

pub enum Command {
    /// Generate or edit; the result becomes the pad's clip (the previous one goes to the
    /// history, so restoring it is the undo).
    Generate {
        pad: usize,
        job: Job,
    },
    /// Generate candidates for the pad; they wait in [`Shared::candidates`].
    Variations {
        pad: usize,
        jobs: Vec<Job>,
    },
    /// Play candidate `index` from the pad (it stands in for the pad's clip until kept or
    /// discarded).
    Preview {
        pad: usize,
        index: usize,
    },
    /// Candidate `index` becomes the pad's clip; the other candidates go.
    Keep {
        pad: usize,
        index: usize,
    },
    /// Drops the pad's candidates (and stops those still generating).
    Discard {
        pad: usize,
    },
    Cancel {
        pad: usize,
    },
    /// Download the official model in the background.
    Download,
    /// Load the model from this folder from now on (the editor checked it first).
    UseModelFolder(std::path::PathBuf),
    /// Stop the running download.
    CancelDownload,
    Stop,
}

/// Owns the thread; dropping it stops and joins the thread.
pub struct Generator {
    tx: Sender<Command>,
    thread: Option<JoinHandle<()>>,
}

impl Generator {
    pub fn spawn(shared: Arc<Shared>, backend: Box<dyn Backend>) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("ezaudio-generation".into())
            .spawn(move || Runner::new(shared, backend).run(rx))
            .ok();
        Self { tx, thread }
    }

    /// For the editor: send jobs and cancels.
    pub fn sender(&self) -> Sender<Command> {
        self.tx.clone()
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Pad,
    Candidate(usize),
}

struct Pending {
    target: Target,
    job: Box<dyn PendingJob>,
    /// [`StepCost::units`] of one of its steps.
    units: f64,
}

/// The work in one step of `job` (see [`StepCost`]).
fn step_units(job: &Job) -> f64 {
    match job {
        Job::Generate(r) => StepCost::units(r.seconds, r.guidance),
        Job::Edit(e) => StepCost::units(e.source.duration_s(), e.recipe.guidance),
        Job::GenerateControlled(c) => StepCost::units(c.recipe.seconds, c.recipe.guidance),
    }
}

struct Runner {
    shared: Arc<Shared>,
    backend: Box<dyn Backend>,
    /// Per pad, in submission order (the engine runs them in that order).
    pending: [Vec<Pending>; PAD_COUNT],
    clocks: [StepClock; PAD_COUNT],
    /// Per pad: variations submitted in the current run.
    variations: [usize; PAD_COUNT],
    started: Instant,
}

impl Runner {
    fn new(shared: Arc<Shared>, backend: Box<dyn Backend>) -> Self {
        Self {
            shared,
            backend,
            pending: Default::default(),
            clocks: Default::default(),
            variations: [0; PAD_COUNT],
            started: Instant::now(),
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        let mut seen: Option<(u64, u32)> = None;
        let mut line_tick = 0u32;
        loop {
            match rx.recv_timeout(TICK) {
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
            }
            // A finished sidechain capture: one controlled job per pad that follows it.
            let shared = self.shared.clone();
            for (pad, job) in follow::poll(&shared, random_seed) {
                self.handle(Command::Generate { pad, job });
            }
            for pad in 0..PAD_COUNT {
                self.poll(pad);
            }
            // Republish after new clips, restores and state loads (once a host rate is known).
            let now = (
                self.shared.store.clip_changes(),
                self.shared.host_rate.load(Ordering::SeqCst),
            );
            if seen != Some(now) && now.1 != 0 {
                self.shared.publish_all();
                seen = Some(now);
            }
            self.shared.collect();

            if line_tick.is_multiple_of(40) {
                let (line, missing) = self.backend.model_view();
                let downloadable = self.backend.downloader().map(|(m, _)| m);
                let mut model = self.shared.model.lock();
                model.line = line;
                model.missing = missing;
                model.downloadable = downloadable;
            }
            line_tick = line_tick.wrapping_add(1);
        }
        for list in &self.pending {
            list.iter().for_each(|p| p.job.cancel());
        }
    }

    fn handle(&mut self, command: Command) {
        let shared = self.shared.clone();
        if matches!(
            command,
            Command::Generate { .. } | Command::Variations { .. }
        ) {
            // Process-wide: with several instances, the last one to submit decides.
            let cores = shared.generation_cores.load(Ordering::Relaxed);
            compute::set_compute_threads(cores as usize);
        }
        match command {
            Command::Generate { pad, job } if pad < PAD_COUNT => {
                self.cancel_where(pad, |t| t == Target::Pad);
                let units = step_units(&job);
                let job = self.backend.submit(job);
                self.pending[pad].push(Pending {
                    target: Target::Pad,
                    job,
                    units,
                });
                shared.progress.lock()[pad] = JobStatus::Queued.into();
            }
            Command::Variations { pad, jobs } if pad < PAD_COUNT && !jobs.is_empty() => {
                self.cancel_where(pad, |t| t != Target::Pad);
                shared.unpreview(pad);
                shared.candidates.lock()[pad] = vec![None; jobs.len()];
                self.variations[pad] = jobs.len();
                for (i, job) in jobs.into_iter().enumerate() {
                    let units = step_units(&job);
                    let job = self.backend.submit(job);
                    self.pending[pad].push(Pending {
                        target: Target::Candidate(i),
                        job,
                        units,
                    });
                }
                shared.progress.lock()[pad] = JobStatus::Queued.into();
            }
            Command::Preview { pad, index } if pad < PAD_COUNT => {
                let clip = shared.candidates.lock()[pad].get(index).cloned().flatten();
                if let Some(clip) = clip {
                    if let Err(e) = shared.preview(pad, index, &clip) {
                        shared.progress.lock()[pad] =
                            Progress::failed(format!("cannot audition: {e}"));
                    }
                }
            }
            Command::Keep { pad, index } if pad < PAD_COUNT => {
                let clip = shared.candidates.lock()[pad].get(index).cloned().flatten();
                if let Some(clip) = clip {
                    self.cancel_where(pad, |t| t != Target::Pad);
                    shared.candidates.lock()[pad].clear();
                    shared.store.set_clip(pad, Arc::unwrap_or_clone(clip));
                }
            }
            Command::Discard { pad } if pad < PAD_COUNT => {
                self.cancel_where(pad, |t| t != Target::Pad);
                shared.candidates.lock()[pad].clear();
                shared.unpreview(pad);
            }
            Command::Cancel { pad } if pad < PAD_COUNT && !self.pending[pad].is_empty() => {
                self.cancel_where(pad, |_| true);
                shared.candidates.lock()[pad].retain(Option::is_some);
                shared.progress.lock()[pad] = JobStatus::Failed(JobError::Cancelled).into();
                shared.jobs.lock()[pad] = JobView::default();
            }
            Command::Download => download::start(&self.shared, self.backend.as_ref()),
            Command::UseModelFolder(dir) => {
                self.backend.use_folder(dir);
                let (line, missing) = self.backend.model_view();
                let downloadable = self.backend.downloader().map(|(m, _)| m);
                let mut model = self.shared.model.lock();
                (model.line, model.missing, model.downloadable) = (line, missing, downloadable);
            }
            Command::CancelDownload => download::cancel(&self.shared),
            _ => {}
        }
    }

    /// Cancels and forgets the pad's pending jobs whose target matches.
    fn cancel_where(&mut self, pad: usize, matches: impl Fn(Target) -> bool) {
        let before = self.pending[pad].len();
        self.pending[pad].retain(|p| {
            let hit = matches(p.target);
            if hit {
                p.job.cancel();
            }
            !hit
        });
        if self.pending[pad].len() != before {
            self.clocks[pad].start_job();
        }
        if self.pending[pad].iter().all(|p| p.target == Target::Pad) {
            self.variations[pad] = 0;
        }
    }

    /// Collects finished jobs of `pad` and updates its progress and time estimate.
    fn poll(&mut self, pad: usize) {
        let list = &mut self.pending[pad];
        if list.is_empty() {
            return;
        }
        let shared = &self.shared;
        let mut failure = None;
        let before = list.len();
        list.retain(|p| match p.job.try_take() {
            Some(Ok(clip)) => {
                match p.target {
                    Target::Pad => shared.store.set_clip(pad, clip),
                    Target::Candidate(i) => {
                        if let Some(slot) = shared.candidates.lock()[pad].get_mut(i) {
                            *slot = Some(Arc::new(clip));
                        }
                    }
                }
                false
            }
            Some(Err(e)) => {
                failure = Some(e);
                false
            }
            None => true,
        });
        let clock = &mut self.clocks[pad];
        if list.len() != before {
            clock.start_job();
        }
        let mut view = JobView::default();
        let progress = match list.first() {
            Some(p) => {
                let progress = p.job.progress();
                if let Progress::Job(JobStatus::Step { k, n }) = progress {
                    clock.observe(k, self.started.elapsed().as_secs_f64());
                    view.eta_s = clock.remaining_s(k, n, list.len() - 1);
                    if let Some(per_step) = clock.job_per_step_s() {
                        shared.step_cost.lock().learn(per_step, p.units);
                    }
                }
                progress
            }
            None => Progress::Job(match failure {
                Some(e) => JobStatus::Failed(e),
                None => JobStatus::Done,
            }),
        };
        let candidates_left = list.iter().filter(|p| p.target != Target::Pad).count();
        if candidates_left > 0 {
            view.variations = Some((
                self.variations[pad].saturating_sub(candidates_left),
                self.variations[pad].max(candidates_left),
            ));
        } else {
            self.variations[pad] = 0;
        }
        shared.progress.lock()[pad] = progress;
        shared.jobs.lock()[pad] = view;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PadStore;
    use ezaudio_engine::audio::{Clip, ClipMeta};
    use ezaudio_engine::Recipe;

    struct Instant24k;
    struct Ready(Clip);
    impl PendingJob for Ready {
        fn progress(&self) -> Progress {
            JobStatus::Step { k: 1, n: 2 }.into()
        }
        fn cancel(&self) {}
        fn try_take(&self) -> Option<Result<Clip, JobError>> {
            Some(Ok(self.0.clone()))
        }
    }
    impl Backend for Instant24k {
        fn submit(&mut self, job: Job) -> Box<dyn PendingJob> {
            let Job::Generate(p) = job else {
                unreachable!()
            };
            let meta = ClipMeta {
                recipe: p,
                ..Default::default()
            };
            Box::new(Ready(Clip::new(vec![0.5; 2400], 24_000, meta)))
        }
        fn model_view(&mut self) -> (String, Option<String>) {
            ("Model: fake".into(), None)
        }
    }

    fn params(seed: u64) -> Recipe {
        Recipe {
            prompt: "beep".into(),
            negative: String::new(),
            seconds: 0.1,
            steps: 2,
            sampler: Default::default(),
            guidance: 5.0,
            rescale: 0.75,
            eta: 1.0,
            seed,
        }
    }

    pub(super) fn wait(mut f: impl FnMut() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// A backend whose status line names the folder it was told to use.
    struct Folders(Option<std::path::PathBuf>);

    impl Backend for Folders {
        fn submit(&mut self, job: Job) -> Box<dyn PendingJob> {
            Instant24k.submit(job)
        }
        fn model_view(&mut self) -> (String, Option<String>) {
            match &self.0 {
                Some(dir) => (format!("Model: {}", dir.display()), None),
                None => ("Model: default".into(), Some("not installed".into())),
            }
        }
        fn use_folder(&mut self, dir: std::path::PathBuf) {
            self.0 = Some(dir);
        }
    }

    #[test]
    fn a_chosen_model_folder_reaches_the_backend_and_the_status() {
        let (shared, _readers) = Shared::new(Arc::new(PadStore::default()));
        let generator = Generator::spawn(shared.clone(), Box::new(Folders(None)));
        generator
            .sender()
            .send(Command::UseModelFolder("/models/mine".into()))
            .unwrap();
        assert!(wait(|| shared.model.lock().line == "Model: /models/mine"));
        assert_eq!(shared.model.lock().missing, None);
        drop(generator);
    }

    #[test]
    fn finished_clips_are_stored_resampled_and_published() {
        let (shared, mut readers) = Shared::new(Arc::new(PadStore::default()));
        shared.host_rate.store(48_000, Ordering::SeqCst);
        let generator = Generator::spawn(shared.clone(), Box::new(Instant24k));
        generator
            .sender()
            .send(Command::Generate {
                pad: 4,
                job: Job::Generate(params(9)),
            })
            .unwrap();
        assert!(wait(|| readers[4].read().is_some()), "clip never published");
        let buf = readers[4].read().unwrap();
        assert_eq!((buf.len(), buf.sample_rate()), (4800, 48_000));
        assert_eq!(shared.store.clip(4).1.unwrap().meta.recipe.seed, 9);
        assert_eq!(shared.progress.lock()[4], JobStatus::Done.into());
        // A second result moves the first to the history.
        generator
            .sender()
            .send(Command::Generate {
                pad: 4,
                job: Job::Generate(params(10)),
            })
            .unwrap();
        assert!(wait(|| shared.store.with(|b| b.pads[4].history.len() == 1)));
        drop(generator);
    }

    #[test]
    fn variations_preview_and_keep() {
        let (shared, mut readers) = Shared::new(Arc::new(PadStore::default()));
        shared.host_rate.store(48_000, Ordering::SeqCst);
        let generator = Generator::spawn(shared.clone(), Box::new(Instant24k));
        let tx = generator.sender();
        tx.send(Command::Generate {
            pad: 2,
            job: Job::Generate(params(1)),
        })
        .unwrap();
        assert!(wait(|| readers[2].read().is_some()));
        let jobs = (0..4).map(|i| Job::Generate(params(20 + i))).collect();
        tx.send(Command::Variations { pad: 2, jobs }).unwrap();
        assert!(wait(|| shared.candidates.lock()[2]
            .iter()
            .filter(|c| c.is_some())
            .count()
            == 4));
        assert_eq!(
            shared.store.clip(2).1.unwrap().meta.recipe.seed,
            1,
            "candidates do not replace the clip"
        );
        let id = readers[2].current_id();
        tx.send(Command::Preview { pad: 2, index: 3 }).unwrap();
        assert!(wait(|| readers[2].current_id() != id));
        assert_eq!(shared.previewing.lock()[2], Some(3));
        assert_ne!(
            shared.audition.load(Ordering::SeqCst) & (1 << 2),
            0,
            "preview plays the candidate"
        );
        tx.send(Command::Keep { pad: 2, index: 3 }).unwrap();
        assert!(wait(
            || shared.store.clip(2).1.unwrap().meta.recipe.seed == 23
        ));
        assert!(wait(
            || shared.candidates.lock()[2].is_empty() && shared.previewing.lock()[2].is_none()
        ));
        assert_eq!(
            shared.store.with(|b| b.pads[2].history[0].meta.recipe.seed),
            1
        );

        // Discard puts the pad's own clip back into the slot.
        tx.send(Command::Variations {
            pad: 2,
            jobs: vec![Job::Generate(params(40))],
        })
        .unwrap();
        assert!(wait(|| shared.candidates.lock()[2]
            .first()
            .is_some_and(|c| c.is_some())));
        tx.send(Command::Preview { pad: 2, index: 0 }).unwrap();
        assert!(wait(|| shared.previewing.lock()[2] == Some(0)));
        let previewed = readers[2].current_id();
        tx.send(Command::Discard { pad: 2 }).unwrap();
        assert!(wait(
            || readers[2].current_id() != previewed && shared.candidates.lock()[2].is_empty()
        ));
        assert_eq!(shared.store.clip(2).1.unwrap().meta.recipe.seed, 23);
    }
}
