//! The per-instance generation thread: submits jobs to the engine, polls them, and turns
//! finished clips into playable pads (store + history, resample, publish). It also keeps the
//! slots collected and republishes after state loads. It outlives the editor, so generation
//! goes on with the window closed, and results that arrive after deactivate are kept.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ezaudio_engine::clip::Clip;
use ezaudio_engine::models::{fetch_official, resolve_model, FetchProgress, ModelSource, Official};

use crate::editor::model::StepClock;
use crate::layout::PAD_COUNT;
use crate::shared::{Download, JobView, Shared};
pub use ezaudio_engine::worker;

/// How often pending jobs are polled and slots collected.
const TICK: Duration = Duration::from_millis(25);

/// A pad's generation state, as the editor shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Progress {
    #[default]
    Idle,
    Queued,
    LoadingModel,
    EncodingText,
    Step {
        k: u32,
        n: u32,
    },
    Decoding,
    Done,
    Failed(String),
    Cancelled,
}

impl Progress {
    pub fn from_status(s: worker::JobStatus) -> Self {
        use worker::JobStatus as S;
        match s {
            S::Queued => Self::Queued,
            S::LoadingModel => Self::LoadingModel,
            S::EncodingText => Self::EncodingText,
            S::Step { k, n } => Self::Step { k, n },
            S::Decoding => Self::Decoding,
            S::Done => Self::Done,
            S::Failed(e) => Self::Failed(e),
            S::Cancelled => Self::Cancelled,
        }
    }

    pub fn is_running(&self) -> bool {
        matches!(
            self,
            Self::Queued
                | Self::LoadingModel
                | Self::EncodingText
                | Self::Step { .. }
                | Self::Decoding
        )
    }
}

/// A submitted job, as the generation thread sees it.
pub trait PendingJob: Send {
    fn progress(&self) -> Progress;
    fn cancel(&self);
    fn try_take(&self) -> Option<Result<Clip, String>>;
}

/// Downloads the model, reporting progress; returns where it was installed.
pub type Downloader =
    Box<dyn FnOnce(&mut dyn FnMut(FetchProgress)) -> Result<PathBuf, String> + Send>;

/// Where jobs go: the engine, or a fake in tests.
pub trait Backend: Send {
    fn submit(&mut self, job: worker::Job) -> Box<dyn PendingJob>;
    /// The model's status line and, when the model is not installed, what to do about it.
    fn model_view(&mut self) -> (String, Option<String>);
    /// The official model a Download would fetch, and the function that fetches it.
    fn downloader(&self) -> Option<(Official, Downloader)> {
        None
    }
}

impl PendingJob for worker::JobHandle {
    fn progress(&self) -> Progress {
        Progress::from_status(self.status())
    }
    fn cancel(&self) {
        worker::JobHandle::cancel(self)
    }
    fn try_take(&self) -> Option<Result<Clip, String>> {
        worker::JobHandle::try_take(self)
    }
}

/// The process-wide engine for the model choice (one worker and model per process and
/// choice; the model itself loads lazily on the first job).
pub struct EngineBackend {
    choice: worker::ModelChoice,
    engine: Option<worker::Engine>,
}

impl Default for EngineBackend {
    /// The model the environment names (`EZAUDIO_MODEL`, `EZAUDIO_DEVICE`, `EZAUDIO_DTYPE`).
    fn default() -> Self {
        Self::new(worker::ModelChoice::from_env())
    }
}

impl EngineBackend {
    pub fn new(choice: worker::ModelChoice) -> Self {
        Self {
            choice,
            engine: None,
        }
    }

    fn engine(&mut self) -> &worker::Engine {
        let choice = &self.choice;
        self.engine
            .get_or_insert_with(|| worker::Engine::shared(choice.clone()))
    }
}

impl Backend for EngineBackend {
    fn submit(&mut self, job: worker::Job) -> Box<dyn PendingJob> {
        Box::new(self.engine().submit(job))
    }

    fn model_view(&mut self) -> (String, Option<String>) {
        let status = self.engine().model_status();
        let missing = match status {
            worker::ModelStatus::Ready { .. } | worker::ModelStatus::Loading => None,
            // A few file checks, once a second, on this thread (never the editor's).
            _ => resolve_model(&self.choice.source).err().map(|e| match e {
                ezaudio_engine::Error::Weights { message, .. } => message,
                e => e.to_string(),
            }),
        };
        (format!("Model: {status}"), missing)
    }

    fn downloader(&self) -> Option<(Official, Downloader)> {
        let ModelSource::Official(model) = self.choice.source else {
            return None;
        };
        let fetch: Downloader = Box::new(move |progress: &mut dyn FnMut(FetchProgress)| {
            fetch_official(model, progress)
                .map(|f| f.root)
                .map_err(|e| e.to_string())
        });
        Some((model, fetch))
    }
}

pub enum Command {
    /// Generate or edit; the result becomes the pad's clip (the previous one goes to the
    /// history, so restoring it is the undo).
    Generate {
        pad: usize,
        job: worker::Job,
    },
    /// Generate candidates for the pad; they wait in [`Shared::candidates`].
    Variations {
        pad: usize,
        jobs: Vec<worker::Job>,
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
            for (pad, job) in crate::capture::poll(&shared, crate::editor::model::random_seed) {
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
        match command {
            Command::Generate { pad, job } if pad < PAD_COUNT => {
                self.cancel_where(pad, |t| t == Target::Pad);
                let job = self.backend.submit(job);
                self.pending[pad].push(Pending {
                    target: Target::Pad,
                    job,
                });
                shared.progress.lock()[pad] = Progress::Queued;
            }
            Command::Variations { pad, jobs } if pad < PAD_COUNT && !jobs.is_empty() => {
                self.cancel_where(pad, |t| t != Target::Pad);
                shared.unpreview(pad);
                shared.candidates.lock()[pad] = vec![None; jobs.len()];
                self.variations[pad] = jobs.len();
                for (i, job) in jobs.into_iter().enumerate() {
                    let job = self.backend.submit(job);
                    self.pending[pad].push(Pending {
                        target: Target::Candidate(i),
                        job,
                    });
                }
                shared.progress.lock()[pad] = Progress::Queued;
            }
            Command::Preview { pad, index } if pad < PAD_COUNT => {
                let clip = shared.candidates.lock()[pad].get(index).cloned().flatten();
                if let Some(clip) = clip {
                    if let Err(e) = shared.preview(pad, index, &clip) {
                        shared.progress.lock()[pad] =
                            Progress::Failed(format!("cannot audition: {e}"));
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
                shared.progress.lock()[pad] = Progress::Cancelled;
                shared.jobs.lock()[pad] = JobView::default();
            }
            Command::Download => self.download(),
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
                if let Progress::Step { k, n } = progress {
                    clock.observe(k, self.started.elapsed().as_secs_f64());
                    view.eta_s = clock.remaining_s(k, n, list.len() - 1);
                }
                progress
            }
            None => match failure {
                Some(e) if e == "cancelled" => Progress::Cancelled,
                Some(e) => Progress::Failed(e),
                None => Progress::Done,
            },
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

    fn download(&mut self) {
        let Some((model, fetch)) = self.backend.downloader() else {
            return;
        };
        {
            let mut view = self.shared.model.lock();
            if matches!(view.download, Download::Running { .. }) {
                return;
            }
            view.download = Download::Running {
                file: String::new(),
                index: 0,
                files: 0,
                done: 0,
                total: 0,
            };
        }
        let shared = self.shared.clone();
        // Not joined: a download can outlive the plugin instance (it only writes to `shared`).
        let spawned = std::thread::Builder::new()
            .name("ezaudio-download".into())
            .spawn(move || {
                let result = fetch(&mut |p: FetchProgress| {
                    shared.model.lock().download = Download::Running {
                        file: p.file,
                        index: p.index,
                        files: p.files,
                        done: p.bytes_done,
                        total: p.bytes_total,
                    };
                });
                shared.model.lock().download = match result {
                    Ok(dir) => {
                        Download::Done(format!("{} installed at {}", model.name(), dir.display()))
                    }
                    Err(e) => Download::Failed(e),
                };
            });
        if let Err(e) = spawned {
            self.shared.model.lock().download =
                Download::Failed(format!("cannot start the download: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PadStore;
    use ezaudio_engine::clip::ClipMeta;
    use std::time::Instant;

    struct Instant24k;
    struct Ready(Clip);
    impl PendingJob for Ready {
        fn progress(&self) -> Progress {
            Progress::Step { k: 1, n: 2 }
        }
        fn cancel(&self) {}
        fn try_take(&self) -> Option<Result<Clip, String>> {
            Some(Ok(self.0.clone()))
        }
    }
    impl Backend for Instant24k {
        fn submit(&mut self, job: worker::Job) -> Box<dyn PendingJob> {
            let worker::Job::Generate(p) = job else {
                unreachable!()
            };
            let meta = ClipMeta {
                prompt: p.prompt,
                seed: p.seed,
                ..Default::default()
            };
            Box::new(Ready(Clip::new(vec![0.5; 2400], 24_000, meta)))
        }
        fn model_view(&mut self) -> (String, Option<String>) {
            ("Model: fake".into(), None)
        }
    }

    fn params(seed: u64) -> worker::GenerateParams {
        worker::GenerateParams {
            prompt: "beep".into(),
            negative: String::new(),
            seconds: 0.1,
            steps: 2,
            guidance: 5.0,
            rescale: 0.75,
            eta: 1.0,
            seed,
        }
    }

    fn wait(mut f: impl FnMut() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
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
                job: worker::Job::Generate(params(9)),
            })
            .unwrap();
        assert!(wait(|| readers[4].read().is_some()), "clip never published");
        let buf = readers[4].read().unwrap();
        assert_eq!((buf.len(), buf.sample_rate()), (4800, 48_000));
        assert_eq!(shared.store.clip(4).1.unwrap().meta.seed, 9);
        assert_eq!(shared.progress.lock()[4], Progress::Done);
        // A second result moves the first to the history.
        generator
            .sender()
            .send(Command::Generate {
                pad: 4,
                job: worker::Job::Generate(params(10)),
            })
            .unwrap();
        assert!(wait(|| shared.store.with(|b| b.pads[4].history.len() == 1)));
        drop(generator);
    }

    /// The fixture folder (env `EZAUDIO_FIXTURES`, else `../shared/fixtures/ezaudio-ref`
    /// beside the repository); the test fails when it is missing.
    fn model_tiny() -> (std::path::PathBuf, serde_json::Value) {
        let root = match std::env::var_os("EZAUDIO_FIXTURES") {
            Some(p) => std::path::PathBuf::from(p),
            None => std::path::PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures/ezaudio-ref"
            )),
        };
        let dir = root.join("model-tiny");
        assert!(
            dir.join("config.yml").is_file(),
            "fixture model {} is missing (set EZAUDIO_FIXTURES)",
            dir.display()
        );
        let text =
            std::fs::read_to_string(dir.join("reference.json")).expect("model-tiny/reference.json");
        (
            dir,
            serde_json::from_str(&text).expect("reference.json is JSON"),
        )
    }

    fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn real_engine_generation_and_edit_arrive_in_the_pad() {
        let (dir, reference) = model_tiny();
        let run = reference["runs"]
            .as_object()
            .and_then(|r| r.values().next())
            .expect("a reference run")
            .clone();
        let model_rate = reference["sample_rate"].as_u64().expect("sample_rate") as u32;
        let seconds = run["seconds"].as_f64().expect("seconds") as f32;
        let mut choice = worker::ModelChoice::new(ModelSource::Folder(dir));
        choice.device = ezaudio_engine::device::DeviceChoice::Cpu;
        let (shared, mut readers) = Shared::new(Arc::new(PadStore::default()));
        let host_rate = 44_100;
        shared.host_rate.store(host_rate, Ordering::SeqCst);
        let generator = Generator::spawn(shared.clone(), Box::new(EngineBackend::new(choice)));
        let pad = 6;
        let mut data = crate::store::PadData {
            prompt: run["prompt"].as_str().expect("prompt").into(),
            ..Default::default()
        };
        data.settings.seconds = seconds;
        data.settings.steps = run["ddim_steps"].as_u64().expect("ddim_steps") as u32;
        data.settings.guidance = run["guidance_scale"].as_f64().expect("guidance_scale") as f32;
        data.settings.seed = run["seed"].as_u64().expect("seed");
        data.settings.seed_locked = true;
        let job = crate::editor::model::generate_request(&data, 0);
        generator
            .sender()
            .send(Command::Generate {
                pad,
                job: worker::Job::Generate(job),
            })
            .unwrap();

        assert!(
            wait_for(300, || readers[pad].read().is_some()),
            "no clip published: {:?}",
            shared.progress.lock()[pad]
        );
        let clip = shared.store.clip(pad).1.expect("clip in the pad");
        let want_len = (seconds as f64 * model_rate as f64).round() as usize;
        assert_eq!(
            (clip.sample_rate, clip.samples.len()),
            (model_rate, want_len)
        );
        assert!(clip.samples.iter().all(|s| s.is_finite()) && clip.peak() > 0.0);
        let m = &clip.meta;
        assert_eq!(
            (m.prompt.as_str(), m.seed, m.steps),
            (
                data.prompt.as_str(),
                data.settings.seed,
                data.settings.steps
            )
        );
        assert_eq!(m.kind, ezaudio_engine::clip::ClipKind::Generate);
        assert!(!m.model_id.is_empty() && m.created > 0);
        let buf = readers[pad].read().unwrap();
        assert_eq!(buf.sample_rate(), host_rate);
        let host_len = want_len as f64 * host_rate as f64 / model_rate as f64;
        assert!(
            (buf.len() as f64 - host_len).abs() <= 2.0,
            "{} vs {host_len}",
            buf.len()
        );
        assert!(wait_for(5, || shared.progress.lock()[pad] == Progress::Done));
        assert!(
            wait_for(5, || shared.model.lock().line.contains("ready on")),
            "{}",
            shared.model.lock().line
        );
        assert_eq!(shared.model.lock().missing, None);

        // Edit a span: the result replaces the clip, the original waits in the history (undo).
        let edit = crate::editor::model::edit_request(
            &data,
            clip.clone(),
            (0.25 * seconds, 0.5 * seconds),
            "a cat",
            5,
        )
        .unwrap();
        generator
            .sender()
            .send(Command::Generate {
                pad,
                job: worker::Job::Edit(edit),
            })
            .unwrap();
        assert!(
            wait_for(300, || shared
                .store
                .clip(pad)
                .1
                .is_some_and(|c| c.meta.prompt == "a cat")),
            "{:?}",
            shared.progress.lock()[pad]
        );
        let edited = shared.store.clip(pad).1.unwrap();
        assert!(matches!(
            edited.meta.kind,
            ezaudio_engine::clip::ClipKind::Edit { .. }
        ));
        assert_eq!(edited.samples.len(), clip.samples.len());
        assert_eq!(
            edited.samples[..100],
            clip.samples[..100],
            "outside the span the audio is kept"
        );
        assert!(shared.store.restore(pad, 0), "undo");
        assert_eq!(shared.store.clip(pad).1.unwrap().samples, clip.samples);
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
            job: worker::Job::Generate(params(1)),
        })
        .unwrap();
        assert!(wait(|| readers[2].read().is_some()));
        let jobs = (0..4)
            .map(|i| worker::Job::Generate(params(20 + i)))
            .collect();
        tx.send(Command::Variations { pad: 2, jobs }).unwrap();
        assert!(wait(|| shared.candidates.lock()[2]
            .iter()
            .filter(|c| c.is_some())
            .count()
            == 4));
        assert_eq!(
            shared.store.clip(2).1.unwrap().meta.seed,
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
        assert!(wait(|| shared.store.clip(2).1.unwrap().meta.seed == 23));
        assert!(wait(
            || shared.candidates.lock()[2].is_empty() && shared.previewing.lock()[2].is_none()
        ));
        assert_eq!(shared.store.with(|b| b.pads[2].history[0].meta.seed), 1);

        // Discard puts the pad's own clip back into the slot.
        tx.send(Command::Variations {
            pad: 2,
            jobs: vec![worker::Job::Generate(params(40))],
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
        assert_eq!(shared.store.clip(2).1.unwrap().meta.seed, 23);
    }

    #[test]
    fn download_runs_in_the_background_with_progress() {
        struct Missing;
        impl Backend for Missing {
            fn submit(&mut self, _job: worker::Job) -> Box<dyn PendingJob> {
                unreachable!()
            }
            fn model_view(&mut self) -> (String, Option<String>) {
                (
                    "Model: not loaded".into(),
                    Some("ezaudio-l is not installed".into()),
                )
            }
            fn downloader(&self) -> Option<(Official, Downloader)> {
                let fetch: Downloader = Box::new(|progress: &mut dyn FnMut(FetchProgress)| {
                    progress(FetchProgress {
                        repo: "r".into(),
                        file: "f".into(),
                        index: 1,
                        files: 1,
                        bytes_done: 5,
                        bytes_total: 10,
                    });
                    std::thread::sleep(Duration::from_millis(200));
                    Ok(PathBuf::from("/models/l"))
                });
                Some((Official::L, fetch))
            }
        }
        let (shared, _readers) = Shared::new(Arc::new(PadStore::default()));
        let generator = Generator::spawn(shared.clone(), Box::new(Missing));
        assert!(wait(|| shared.model.lock().missing.is_some()
            && shared.model.lock().downloadable == Some(Official::L)));
        generator.sender().send(Command::Download).unwrap();
        assert!(wait(|| matches!(
            shared.model.lock().download,
            Download::Running {
                done: 5,
                total: 10,
                ..
            }
        )));
        assert!(wait(
            || matches!(&shared.model.lock().download, Download::Done(m) if m.contains("/models/l"))
        ));
    }
}
