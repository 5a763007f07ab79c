//! Downloading the official models into the Hugging Face cache (hf-hub), with progress and
//! cancellation.
//!
//! Staging: hf-hub streams each file into `blobs/<etag>.incomplete` and renames it to its
//! blob, then links it from `snapshots/`, only when the whole body has arrived; the model
//! lookup reads `snapshots/` only. So a download that is cancelled, killed or cut off leaves
//! at most an `.incomplete` file that nothing loads, and the next download of that file
//! starts it again from the first byte (hf-hub truncates the staging file; it does not
//! resume). What is linked is checked once more here ([`check_checkpoint`]) before the
//! model counts as installed; a damaged file is unlinked so the next download replaces it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hf_hub::progress::{DownloadEvent, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFError};

use super::{
    hf_cache_dir, not_installed_message, offline, ModelFolder, Official, CONTROLNET_FILE,
    EZAUDIO_REPO, VAE_CONFIG_FILE, VAE_FILE,
};
use crate::error::{Error, Result};

/// Where a download stands: which file (repository and path), how many bytes of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchProgress {
    pub repo: String,
    pub file: String,
    /// 1-based number of this file, and how many files are known so far.
    pub index: usize,
    pub files: usize,
    pub bytes_done: u64,
    /// 0 while unknown.
    pub bytes_total: u64,
}

/// Forwards hf-hub's byte counts to the fetching thread (the handler must be `'static`),
/// and stops the transfer when cancelled.
struct Forward(crossbeam_channel::Sender<(u64, u64)>, Arc<AtomicBool>);

/// The unwind payload that stops a cancelled transfer (see [`Forward`]).
struct Cancel;

impl ProgressHandler for Forward {
    fn on_progress(&self, event: &ProgressEvent) {
        if self.1.load(Ordering::Relaxed) {
            // hf-hub's blocking download has no way to stop a transfer; its progress
            // callback runs inside the transfer loop on the download thread, so unwinding
            // from here ends the transfer there. `resume_unwind` runs no panic hook (nothing
            // is printed); the download thread's join sees it and reports `Cancelled`. The
            // staging file stays `.incomplete` and is never linked.
            std::panic::resume_unwind(Box::new(Cancel));
        }
        let ProgressEvent::Download(ev) = event else {
            return;
        };
        let update = match ev {
            DownloadEvent::Start { total_bytes, .. } => (0, *total_bytes),
            DownloadEvent::Progress { files } => {
                match files.iter().map(|f| f.bytes_completed).max() {
                    Some(done) => (done, 0),
                    None => return,
                }
            }
            DownloadEvent::AggregateProgress {
                bytes_completed,
                total_bytes,
                ..
            } => (*bytes_completed, *total_bytes),
            DownloadEvent::Complete => return,
        };
        let _ = self.0.try_send(update);
    }
}

/// Downloads an official model's files into the Hugging Face cache that [`resolve_model`]
/// searches (small files first, so no connection or a moved file shows up at once), calling
/// `progress` on this thread as bytes arrive, and returns the resolved folder. Blocking: run
/// it off any UI or audio thread. Fails with the install instructions when [`offline`].
pub fn fetch_official(
    model: Official,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<ModelFolder> {
    fetch_official_with(model, false, progress)
}

/// [`fetch_official`], plus the energy ControlNet checkpoint ([`CONTROLNET_FILE`]) when
/// `controlnet` (its yml is built into the engine).
pub fn fetch_official_with(
    model: Official,
    controlnet: bool,
    progress: &mut dyn FnMut(FetchProgress),
) -> Result<ModelFolder> {
    fetch_official_cancellable(
        model,
        controlnet,
        progress,
        Arc::new(AtomicBool::new(false)),
    )
}

/// [`fetch_official_with`] that stops soon after `cancel` is set (within one progress event
/// of the running transfer, or before the next file), failing with [`Error::Cancelled`].
pub fn fetch_official_cancellable(
    model: Official,
    controlnet: bool,
    progress: &mut dyn FnMut(FetchProgress),
    cancel: Arc<AtomicBool>,
) -> Result<ModelFolder> {
    let hub = hf_cache_dir().ok_or_else(|| {
        Error::InvalidInput(
            "cannot find the home folder for the download cache (set HF_HOME)".into(),
        )
    })?;
    if offline() {
        return Err(Error::InvalidInput(format!(
            "downloads are disabled (EZAUDIO_OFFLINE / HF_HUB_OFFLINE)\n\n{}",
            not_installed_message(model, &[])
        )));
    }
    let client = HFClient::builder()
        .cache_dir(&hub)
        .retry_max_attempts(3)
        .build_sync()
        .map_err(|e| Error::InvalidInput(format!("cannot start the downloader: {e}")))?;
    let te = model.text_encoder_repo();
    let mut files = 6;
    let mut index = 0;
    let mut get = |repo: &str, file: &str, files: usize| -> std::result::Result<PathBuf, HFError> {
        if cancel.load(Ordering::Relaxed) {
            return Err(HFError::Other(CANCELLED.into()));
        }
        index += 1;
        let mut state = FetchProgress {
            repo: repo.to_string(),
            file: file.to_string(),
            index,
            files: files.max(index),
            bytes_done: 0,
            bytes_total: 0,
        };
        progress(state.clone());
        let (tx, rx) = crossbeam_channel::bounded(64);
        let (owner, name) = hf_hub::split_id(repo);
        let stop = cancel.clone();
        let path = std::thread::scope(|scope| {
            let client = &client;
            let download = scope.spawn(move || {
                client
                    .model(owner, name)
                    .download_file()
                    .filename(file)
                    .progress(Forward(tx, stop))
                    .send()
            });
            // The sender drops with the download: the loop ends when the file is done.
            for (done, total) in rx.iter() {
                state.bytes_done = done.max(state.bytes_done);
                if total > 0 {
                    state.bytes_total = total;
                }
                progress(state.clone());
            }
            download.join().unwrap_or_else(|payload| {
                Err(HFError::Other(if payload.is::<Cancel>() {
                    CANCELLED.into()
                } else {
                    format!("the download of {file} stopped unexpectedly")
                }))
            })
        })?;
        unlink_if_damaged(&path).map_err(|e| HFError::Other(e.to_string()))?;
        Ok(path)
    };
    let fail = |repo: &str, file: &str, e: HFError| match e {
        HFError::Other(m) if m == CANCELLED => Error::Cancelled,
        e => Error::InvalidInput(format!("download of {repo}: {file} failed: {e}")),
    };
    get(EZAUDIO_REPO, VAE_CONFIG_FILE, files)
        .map_err(|e| fail(EZAUDIO_REPO, VAE_CONFIG_FILE, e))?;
    for file in ["config.json", "tokenizer.json"] {
        get(te, file, files).map_err(|e| fail(te, file, e))?;
    }
    let extra: &[&str] = if controlnet { &[CONTROLNET_FILE] } else { &[] };
    files += extra.len();
    for file in [VAE_FILE, model.dit_file()].iter().chain(extra) {
        get(EZAUDIO_REPO, file, files).map_err(|e| fail(EZAUDIO_REPO, file, e))?;
    }
    // flan-t5-large has one model.safetensors; flan-t5-xl is sharded behind an index.
    match get(te, "model.safetensors", files) {
        Ok(_) => {}
        Err(HFError::EntryNotFound { .. }) => {
            let index_file = "model.safetensors.index.json";
            let path = get(te, index_file, files + 1).map_err(|e| fail(te, index_file, e))?;
            let shards = shard_names(&path)?;
            files += 1 + shards.len();
            for shard in &shards {
                get(te, shard, files).map_err(|e| fail(te, shard, e))?;
            }
        }
        Err(e) => return Err(fail(te, "model.safetensors", e)),
    }
    ModelFolder::from_hf_cache(&hub, model).ok_or_else(|| {
        Error::InvalidInput(format!(
            "the download finished but {} is incomplete in {}",
            model.name(),
            hub.display()
        ))
    })
}

/// hf-hub's error text for a transfer this module stopped (mapped to [`Error::Cancelled`]).
const CANCELLED: &str = "download cancelled";

/// Checks a just-linked checkpoint (`.pt`, `.safetensors`); a damaged one is unlinked from
/// the snapshot (and its blob removed) so it can never load and the next download fetches it
/// again. Other files (JSON, tokenizer) are read whole at load, where damage is reported.
pub fn unlink_if_damaged(path: &Path) -> Result<()> {
    let checkpoint = path
        .extension()
        .is_some_and(|e| e == "pt" || e == "safetensors");
    if !checkpoint {
        return Ok(());
    }
    let Err(e) = super::integrity::check_checkpoint(path) else {
        return Ok(());
    };
    if let Ok(blob) = std::fs::canonicalize(path) {
        let _ = std::fs::remove_file(blob);
    }
    let _ = std::fs::remove_file(path);
    Err(Error::InvalidInput(format!(
        "{e}; the damaged download was removed, download again"
    )))
}

/// The shard files a `model.safetensors.index.json` names.
fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::weights(index, e.to_string()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::weights(index, format!("not JSON: {e}")))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::weights(index, "no weight_map"))?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

#[cfg(test)]
mod fetch_tests {
    use super::*;

    #[test]
    fn offline_fetch_fails_at_once_with_instructions() {
        // Setting the variable affects only this process's other tests that download, and
        // none does.
        std::env::set_var("EZAUDIO_OFFLINE", "1");
        let mut calls = 0;
        let err = fetch_official(Official::L, &mut |_| calls += 1)
            .unwrap_err()
            .to_string();
        assert_eq!(calls, 0);
        assert!(
            err.contains("downloads are disabled") && err.contains("ezaudio-l is not installed"),
            "{err}"
        );
    }

    /// A file as hf-hub leaves it: a blob under `blobs/`, linked from `snapshots/rev/`.
    fn cached(hub: &Path, repo: &str, file: &str, bytes: &[u8], linked: bool) -> PathBuf {
        let repo_dir = hub.join(super::super::repo_cache_name(repo));
        let blob = repo_dir.join("blobs").join(format!("{}", file.len()));
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        let link = repo_dir.join("snapshots/rev").join(file);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), "rev").unwrap();
        if linked {
            std::fs::write(&blob, bytes).unwrap();
            std::os::unix::fs::symlink(&blob, &link).unwrap();
        } else {
            // Interrupted: only the staging file exists.
            std::fs::write(blob.with_extension("incomplete"), bytes).unwrap();
        }
        link
    }

    #[cfg(unix)]
    #[test]
    fn an_interrupted_or_damaged_download_never_counts_as_installed() {
        let fixtures = std::env::var_os("EZAUDIO_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/ezaudio-ref")
            });
        let vae = std::fs::read(fixtures.join("model-tiny/vae/1m.pt")).expect("fixture VAE");
        let dit = std::fs::read(fixtures.join("model-tiny/dit.pt")).expect("fixture DiT");
        let hub = tempfile::tempdir().unwrap();
        let hub = hub.path();
        let model = Official::L;
        let te = model.text_encoder_repo();
        cached(hub, EZAUDIO_REPO, VAE_CONFIG_FILE, b"{}", true);
        cached(hub, EZAUDIO_REPO, VAE_FILE, &vae, true);
        for f in ["config.json", "tokenizer.json", "model.safetensors"] {
            cached(hub, te, f, b"{}", true);
        }
        // The DiT was cut off midway: hf-hub's staging file, never linked.
        cached(
            hub,
            EZAUDIO_REPO,
            model.dit_file(),
            &dit[..dit.len() / 2],
            false,
        );
        assert!(ModelFolder::from_hf_cache(hub, model).is_none());

        // A linked checkpoint that is cut short (a broken cache) is unlinked and its blob
        // removed, so the next download fetches it again.
        let link = cached(
            hub,
            EZAUDIO_REPO,
            model.dit_file(),
            &dit[..dit.len() / 2],
            true,
        );
        let blob = std::fs::canonicalize(&link).unwrap();
        let err = unlink_if_damaged(&link).unwrap_err().to_string();
        assert!(err.contains("download again"), "{err}");
        assert!(!link.exists() && !blob.exists());
        assert!(ModelFolder::from_hf_cache(hub, model).is_none());

        // The complete file passes and stays; the model is found.
        let link = cached(hub, EZAUDIO_REPO, model.dit_file(), &dit, true);
        unlink_if_damaged(&link).expect("a whole checkpoint passes");
        assert!(link.is_file());
        assert!(ModelFolder::from_hf_cache(hub, model).is_some());
    }

    #[test]
    fn a_cancelled_transfer_stops_and_says_cancelled() {
        // The handler unwinds with `Cancel` once the flag is set; the join maps it.
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded(4);
        let forward = Forward(tx, cancel.clone());
        let ev = ProgressEvent::Download(DownloadEvent::Start {
            total_files: 1,
            total_bytes: 10,
        });
        forward.on_progress(&ev);
        assert_eq!(rx.try_recv(), Ok((0, 10)));
        cancel.store(true, Ordering::Relaxed);
        let stopped = std::thread::spawn(move || forward.on_progress(&ev)).join();
        assert!(stopped.unwrap_err().is::<Cancel>());
    }
}
