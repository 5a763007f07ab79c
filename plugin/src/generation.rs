//! The per-instance generation thread: submits jobs to the engine, polls them, and turns
//! finished clips into playable pads (store + history, resample, publish). It also keeps the
//! slots collected and republishes after state loads. It outlives the editor, so generation
//! goes on with the window closed, and results that arrive after deactivate are kept.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ezaudio_engine::clip::Clip;

use crate::layout::PAD_COUNT;
use crate::shared::Shared;
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
    Step { k: u32, n: u32 },
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
        matches!(self, Self::Queued | Self::LoadingModel | Self::EncodingText | Self::Step { .. } | Self::Decoding)
    }
}

/// A submitted job, as the generation thread sees it.
pub trait PendingJob: Send {
    fn progress(&self) -> Progress;
    fn cancel(&self);
    fn try_take(&self) -> Option<Result<Clip, String>>;
}

/// Where jobs go: the engine, or a fake in tests.
pub trait Backend: Send {
    fn submit(&mut self, job: worker::Job) -> Box<dyn PendingJob>;
    fn model_line(&mut self) -> String;
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

/// The process-wide engine handle (one worker and model per process; the model itself loads
/// lazily on the first job).
#[derive(Default)]
pub struct EngineBackend(Option<worker::Engine>);

impl EngineBackend {
    fn engine(&mut self) -> &worker::Engine {
        self.0.get_or_insert_with(|| worker::Engine::shared(worker::ModelChoice::default()))
    }
}

impl Backend for EngineBackend {
    fn submit(&mut self, job: worker::Job) -> Box<dyn PendingJob> {
        Box::new(self.engine().submit(job))
    }
    fn model_line(&mut self) -> String {
        format!("Model: {}", self.engine().model_status())
    }
}

pub enum Command {
    Generate { pad: usize, job: worker::Job },
    Cancel { pad: usize },
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
            .spawn(move || run(shared, backend, rx))
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

fn run(shared: Arc<Shared>, mut backend: Box<dyn Backend>, rx: Receiver<Command>) {
    let mut pending: [Option<Box<dyn PendingJob>>; PAD_COUNT] = Default::default();
    let mut seen: Option<(u64, u32)> = None;
    let mut line_tick = 0u32;
    loop {
        match rx.recv_timeout(TICK) {
            Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Command::Generate { pad, job }) if pad < PAD_COUNT => {
                if let Some(old) = pending[pad].take() {
                    old.cancel();
                }
                pending[pad] = Some(backend.submit(job));
                shared.progress.lock()[pad] = Progress::Queued;
            }
            Ok(Command::Cancel { pad }) if pad < PAD_COUNT => {
                if let Some(job) = pending[pad].take() {
                    job.cancel();
                    shared.progress.lock()[pad] = Progress::Cancelled;
                }
            }
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
        }
        // A finished sidechain capture: one controlled job per pad that follows it.
        for (pad, job) in crate::capture::poll(&shared, crate::editor::model::random_seed) {
            if let Some(old) = pending[pad].take() {
                old.cancel();
            }
            pending[pad] = Some(backend.submit(job));
            shared.progress.lock()[pad] = Progress::Queued;
        }

        for (pad, slot) in pending.iter_mut().enumerate() {
            let Some(job) = slot else { continue };
            match job.try_take() {
                Some(Ok(clip)) => {
                    shared.store.set_clip(pad, clip);
                    shared.progress.lock()[pad] = Progress::Done;
                    *slot = None;
                }
                Some(Err(e)) => {
                    shared.progress.lock()[pad] = Progress::Failed(e);
                    *slot = None;
                }
                None => {
                    let p = job.progress();
                    let done = matches!(p, Progress::Cancelled);
                    shared.progress.lock()[pad] = p;
                    if done {
                        *slot = None;
                    }
                }
            }
        }

        // Republish after new clips, restores and state loads (once a host rate is known).
        let now = (shared.store.clip_changes(), shared.host_rate.load(Ordering::SeqCst));
        if seen != Some(now) && now.1 != 0 {
            shared.publish_all();
            seen = Some(now);
        }
        shared.collect();

        if line_tick.is_multiple_of(40) {
            *shared.model_line.lock() = backend.model_line();
        }
        line_tick = line_tick.wrapping_add(1);
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
            let worker::Job::Generate(p) = job else { unreachable!() };
            let meta = ClipMeta { prompt: p.prompt, seed: p.seed, ..Default::default() };
            Box::new(Ready(Clip::new(vec![0.5; 2400], 24_000, meta)))
        }
        fn model_line(&mut self) -> String {
            "Model: fake".into()
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
        generator.sender().send(Command::Generate { pad: 4, job: worker::Job::Generate(params(9)) }).unwrap();
        assert!(wait(|| readers[4].read().is_some()), "clip never published");
        let buf = readers[4].read().unwrap();
        assert_eq!((buf.len(), buf.sample_rate()), (4800, 48_000));
        assert_eq!(shared.store.clip(4).1.unwrap().meta.seed, 9);
        assert_eq!(shared.progress.lock()[4], Progress::Done);
        // A second result moves the first to the history.
        generator.sender().send(Command::Generate { pad: 4, job: worker::Job::Generate(params(10)) }).unwrap();
        assert!(wait(|| shared.store.with(|b| b.pads[4].history.len() == 1)));
        drop(generator);
    }

    #[test]
    fn missing_model_is_reported_in_plain_words() {
        let (shared, _readers) = Shared::new(Arc::new(PadStore::default()));
        let missing = ezaudio_engine::models::ModelSource::Folder("/nonexistent/ezaudio-model".into());
        let engine = worker::Engine::start(worker::ModelChoice::new(missing), None);
        let generator = Generator::spawn(shared.clone(), Box::new(EngineBackend(Some(engine))));
        generator.sender().send(Command::Generate { pad: 0, job: worker::Job::Generate(params(1)) }).unwrap();
        assert!(wait(|| matches!(&shared.progress.lock()[0], Progress::Failed(e) if e.contains("model folder not found"))));
        assert!(wait(|| shared.model_line.lock().contains("error")));
    }
}
