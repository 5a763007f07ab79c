//! The model download, started from the editor's Download button: it runs on a thread of
//! its own (not joined: it may outlive the plugin instance) and reports its progress into
//! [`Shared::model`], so neither the generation thread nor the editor ever waits on it.
//! Cancel sets the download's flag ([`Shared::download_cancel`]): the transfer stops within
//! a progress event and the view says Cancelled; what was half-fetched is never installed
//! (the engine's fetch stages files and links them only when whole), so Download simply
//! starts again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ezaudio_engine::install::FetchProgress;

use super::backend::{Backend, DownloadError};
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
    // A fresh flag per download: a late Cancel of an earlier one cannot stop this one.
    let cancel = Arc::new(AtomicBool::new(false));
    *shared.download_cancel.lock() = cancel.clone();
    let writer = shared.clone();
    // Not joined: a download can outlive the plugin instance (it only writes to `shared`).
    let spawned = std::thread::Builder::new()
        .name("ezaudio-download".into())
        .spawn(move || {
            let stop = cancel.clone();
            let result = fetch(
                &mut |p: FetchProgress| {
                    // Progress that arrives after Cancel must not overwrite "Cancelled".
                    if !stop.load(Ordering::Relaxed) {
                        writer.model.lock().download = Download::Running {
                            file: p.file,
                            index: p.index,
                            files: p.files,
                            done: p.bytes_done,
                            total: p.bytes_total,
                        };
                    }
                },
                cancel,
            );
            writer.model.lock().download = match result {
                Ok(dir) => {
                    Download::Done(format!("{} installed at {}", model.name(), dir.display()))
                }
                Err(DownloadError::Cancelled) => Download::Cancelled,
                Err(DownloadError::Failed(e)) => Download::Failed(e),
            };
        });
    if let Err(e) = spawned {
        shared.model.lock().download = Download::Failed(format!("cannot start the download: {e}"));
    }
}

/// Stops the running download, if any (the view says Cancelled when it has stopped).
pub fn cancel(shared: &Shared) {
    if matches!(shared.model.lock().download, Download::Running { .. }) {
        shared.download_cancel.lock().store(true, Ordering::Relaxed);
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
                let fetch: Downloader = Box::new(
                    |progress: &mut dyn FnMut(FetchProgress), _cancel: Arc<AtomicBool>| {
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
                    },
                );
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

    /// A fake source that stages its file and links it only when whole, as the engine's fetch
    /// does: `chunks` pieces, one per 20 ms, into `<dest>.incomplete`, renamed at the end.
    struct Staged {
        dest: PathBuf,
        chunks: usize,
    }

    impl Backend for Staged {
        fn submit(&mut self, _job: Job) -> Box<dyn PendingJob> {
            unreachable!()
        }
        fn model_view(&mut self) -> (String, Option<String>) {
            ("Model: not loaded".into(), Some("not installed".into()))
        }
        fn downloader(&self) -> Option<(Official, Downloader)> {
            let (dest, chunks) = (self.dest.clone(), self.chunks);
            let fetch: Downloader = Box::new(
                move |progress: &mut dyn FnMut(FetchProgress), cancel: Arc<AtomicBool>| {
                    let staging = dest.with_extension("incomplete");
                    // Restart, never resume: a stale staging file is overwritten.
                    let mut data = Vec::new();
                    for k in 0..chunks {
                        if cancel.load(Ordering::Relaxed) {
                            return Err(DownloadError::Cancelled);
                        }
                        data.extend_from_slice(&[k as u8; 100]);
                        std::fs::write(&staging, &data)
                            .map_err(|e| DownloadError::Failed(e.to_string()))?;
                        progress(FetchProgress {
                            repo: "r".into(),
                            file: "dit.pt".into(),
                            index: 1,
                            files: 1,
                            bytes_done: data.len() as u64,
                            bytes_total: (chunks * 100) as u64,
                        });
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    std::fs::rename(&staging, &dest)
                        .map_err(|e| DownloadError::Failed(e.to_string()))?;
                    Ok(dest.clone())
                },
            );
            Some((Official::L, fetch))
        }
    }

    #[test]
    fn a_download_can_be_cancelled_midway_and_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("dit.pt");
        let (shared, _readers) = Shared::new(Arc::new(PadStore::default()));
        let generator = Generator::spawn(
            shared.clone(),
            Box::new(Staged {
                dest: dest.clone(),
                chunks: 100,
            }),
        );
        assert!(wait(
            || shared.model.lock().downloadable == Some(Official::L)
        ));
        generator.sender().send(Command::Download).unwrap();
        assert!(wait(|| matches!(
            shared.model.lock().download,
            Download::Running { done, .. } if done >= 500
        )));
        generator.sender().send(Command::CancelDownload).unwrap();
        assert!(wait(|| shared.model.lock().download == Download::Cancelled));
        // Stopped midway: only the staging file, nothing where the model is looked for.
        let staged = std::fs::metadata(dest.with_extension("incomplete"))
            .unwrap()
            .len();
        assert!(staged > 0 && staged < 10_000, "{staged} bytes staged");
        assert!(!dest.exists(), "a cancelled download installed a file");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            shared.model.lock().download,
            Download::Cancelled,
            "stays cancelled"
        );

        // Download again: starts over and completes with the whole file.
        generator.sender().send(Command::Download).unwrap();
        assert!(wait(|| matches!(
            &shared.model.lock().download,
            Download::Done(_)
        )));
        let bytes = std::fs::read(&dest).unwrap();
        assert_eq!(bytes.len(), 10_000);
        assert!(bytes
            .chunks(100)
            .enumerate()
            .all(|(k, c)| c.iter().all(|&b| b == k as u8)));
        assert!(!dest.with_extension("incomplete").exists());
    }
}
