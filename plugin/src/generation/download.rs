//! The model download, started from the editor's Download button: it runs on a thread of
//! its own (not joined: it may outlive the plugin instance) and reports its progress into
//! [`Shared::model`], so neither the generation thread nor the editor ever waits on it.

use std::sync::Arc;

use ezaudio_engine::install::FetchProgress;

use super::backend::Backend;
use crate::shared::Shared;
use crate::status::Download;

/// Starts downloading the model `backend` names, unless a download is already running or the
/// backend has nothing to download.
pub fn start(shared: &Arc<Shared>, backend: &dyn Backend) {
    let Some((model, fetch)) = backend.downloader() else {
        return;
    };
    {
        let mut view = shared.model.lock();
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
    let writer = shared.clone();
    // Not joined: a download can outlive the plugin instance (it only writes to `shared`).
    let spawned = std::thread::Builder::new()
        .name("ezaudio-download".into())
        .spawn(move || {
            let result = fetch(&mut |p: FetchProgress| {
                writer.model.lock().download = Download::Running {
                    file: p.file,
                    index: p.index,
                    files: p.files,
                    done: p.bytes_done,
                    total: p.bytes_total,
                };
            });
            writer.model.lock().download = match result {
                Ok(dir) => {
                    Download::Done(format!("{} installed at {}", model.name(), dir.display()))
                }
                Err(e) => Download::Failed(e),
            };
        });
    if let Err(e) = spawned {
        shared.model.lock().download = Download::Failed(format!("cannot start the download: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use ezaudio_engine::engine::Job;
    use ezaudio_engine::install::Official;

    use super::*;
    use crate::generation::backend::{Downloader, PendingJob};
    use crate::generation::tests::wait;
    use crate::generation::{Command, Generator};
    use crate::store::PadStore;

    #[test]
    fn download_runs_in_the_background_with_progress() {
        struct Missing;
        impl Backend for Missing {
            fn submit(&mut self, _job: Job) -> Box<dyn PendingJob> {
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
