//! Where the runner's jobs go: the [`Backend`] trait (the engine in the plugin, a fake in
//! tests) and the engine's implementation, [`EngineBackend`]. The only file of the generation
//! room that talks to the engine's worker API, so the runner can be tested without a model.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use ezaudio_engine::audio::Clip;
use ezaudio_engine::engine::{Engine, Job, JobError, JobHandle, ModelChoice, ModelStatus};
use ezaudio_engine::install::{
    fetch_official_cancellable, resolve_model, FetchProgress, ModelSource, Official,
};

use crate::status::Progress;

/// A submitted job, as the generation thread sees it.
pub trait PendingJob: Send {
    fn progress(&self) -> Progress;
    fn cancel(&self);
    fn try_take(&self) -> Option<Result<Clip, JobError>>;
}

/// Why a download ended without a model.
#[derive(Debug, Clone, PartialEq)]
pub enum DownloadError {
    /// The cancel flag was set: the download stopped, nothing partial was installed.
    Cancelled,
    Failed(String),
}

/// Downloads the model, reporting progress, until done or the flag is set; returns where it
/// was installed.
pub type Downloader = Box<
    dyn FnOnce(&mut dyn FnMut(FetchProgress), Arc<AtomicBool>) -> Result<PathBuf, DownloadError>
        + Send,
>;

/// Where jobs go: the engine, or a fake in tests.
pub trait Backend: Send {
    fn submit(&mut self, job: Job) -> Box<dyn PendingJob>;
    /// The model's status line and, when the model is not installed, what to do about it.
    fn model_view(&mut self) -> (String, Option<String>);
    /// The official model a Download would fetch, and the function that fetches it.
    fn downloader(&self) -> Option<(Official, Downloader)> {
        None
    }
    /// Load from this model folder from now on (the editor's folder chooser).
    fn use_folder(&mut self, dir: PathBuf) {
        let _ = dir;
    }
}

impl PendingJob for JobHandle {
    fn progress(&self) -> Progress {
        self.status().into()
    }
    fn cancel(&self) {
        JobHandle::cancel(self)
    }
    fn try_take(&self) -> Option<Result<Clip, JobError>> {
        JobHandle::try_take(self)
    }
}

/// The process-wide engine for the model choice (one worker and model per process and
/// choice; the model itself loads lazily on the first job).
pub struct EngineBackend {
    choice: ModelChoice,
    engine: Option<Engine>,
}

impl Default for EngineBackend {
    /// The model the environment names (`EZAUDIO_MODEL`, `EZAUDIO_DEVICE`, `EZAUDIO_DTYPE`).
    fn default() -> Self {
        Self::new(ModelChoice::from_env())
    }
}

impl EngineBackend {
    pub fn new(choice: ModelChoice) -> Self {
        Self {
            choice,
            engine: None,
        }
    }

    fn engine(&mut self) -> &Engine {
        let choice = &self.choice;
        self.engine
            .get_or_insert_with(|| Engine::shared(choice.clone()))
    }
}

impl Backend for EngineBackend {
    fn submit(&mut self, job: Job) -> Box<dyn PendingJob> {
        Box::new(self.engine().submit(job))
    }

    fn model_view(&mut self) -> (String, Option<String>) {
        let status = self.engine().model_status();
        let missing = match status {
            ModelStatus::Ready { .. } | ModelStatus::Loading => None,
            // A few file checks, once a second, on this thread (never the editor's).
            _ => resolve_model(&self.choice.source).err().map(|e| match e {
                ezaudio_engine::Error::Weights { message, .. } => message,
                e => e.to_string(),
            }),
        };
        (format!("Model: {status}"), missing)
    }

    fn use_folder(&mut self, dir: PathBuf) {
        // A new choice gets its own engine (the old one's model is dropped with it).
        self.choice.source = ModelSource::Folder(dir);
        self.engine = None;
    }

    fn downloader(&self) -> Option<(Official, Downloader)> {
        let ModelSource::Official(model) = self.choice.source else {
            return None;
        };
        let fetch: Downloader = Box::new(
            move |progress: &mut dyn FnMut(FetchProgress), cancel: Arc<AtomicBool>| {
                fetch_official_cancellable(model, false, progress, cancel)
                    .map(|f| f.root)
                    .map_err(|e| match e {
                        ezaudio_engine::Error::Cancelled => DownloadError::Cancelled,
                        e => DownloadError::Failed(e.to_string()),
                    })
            },
        );
        Some((model, fetch))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::generation::{Command, Generator};
    use crate::shared::Shared;
    use crate::store::PadStore;
    use ezaudio_engine::engine::JobStatus;

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
        let mut choice = ModelChoice::new(ModelSource::Folder(dir));
        choice.device = ezaudio_engine::runtime::DeviceChoice::Cpu;
        let (shared, mut readers) = Shared::new(Arc::new(PadStore::default()));
        let host_rate = 44_100;
        shared.host_rate.store(host_rate, Ordering::SeqCst);
        let generator = Generator::spawn(shared.clone(), Box::new(EngineBackend::new(choice)));
        let pad = 6;
        let mut data = crate::store::PadData::default();
        data.recipe.prompt = run["prompt"].as_str().expect("prompt").into();
        data.recipe.seconds = seconds;
        data.recipe.steps = run["ddim_steps"].as_u64().expect("ddim_steps") as u32;
        data.recipe.guidance = run["guidance_scale"].as_f64().expect("guidance_scale") as f32;
        data.recipe.seed = run["seed"].as_u64().expect("seed");
        data.seed_locked = true;
        let job = crate::jobs::generate_request(&data, 0);
        generator
            .sender()
            .send(Command::Generate {
                pad,
                job: Job::Generate(job),
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
            (m.recipe.prompt.as_str(), m.recipe.seed, m.recipe.steps),
            (
                data.recipe.prompt.as_str(),
                data.recipe.seed,
                data.recipe.steps
            )
        );
        assert_eq!(m.kind, ezaudio_engine::audio::ClipKind::Generate);
        assert!(!m.model_id.is_empty() && m.created > 0);
        let buf = readers[pad].read().unwrap();
        assert_eq!(buf.sample_rate(), host_rate);
        let host_len = want_len as f64 * host_rate as f64 / model_rate as f64;
        assert!(
            (buf.len() as f64 - host_len).abs() <= 2.0,
            "{} vs {host_len}",
            buf.len()
        );
        assert!(wait_for(5, || shared.progress.lock()[pad] == JobStatus::Done.into()));
        assert!(
            wait_for(5, || shared.model.lock().line.contains("ready on")),
            "{}",
            shared.model.lock().line
        );
        assert_eq!(shared.model.lock().missing, None);

        // Edit a span: the result replaces the clip, the original waits in the history (undo).
        let edit = crate::jobs::edit_request(
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
                job: Job::Edit(edit),
            })
            .unwrap();
        assert!(
            wait_for(300, || shared.store.clip(pad).1.is_some_and(|c| c
                .meta
                .recipe
                .prompt
                == "a cat")),
            "{:?}",
            shared.progress.lock()[pad]
        );
        let edited = shared.store.clip(pad).1.unwrap();
        assert!(matches!(
            edited.meta.kind,
            ezaudio_engine::audio::ClipKind::Edit { .. }
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
}
