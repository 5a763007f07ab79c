//! Downloading the official models into the Hugging Face cache (hf-hub), with progress.

use std::path::{Path, PathBuf};

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

/// Forwards hf-hub's byte counts to the fetching thread (the handler must be `'static`).
struct Forward(crossbeam_channel::Sender<(u64, u64)>);

impl ProgressHandler for Forward {
    fn on_progress(&self, event: &ProgressEvent) {
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
        std::thread::scope(|scope| {
            let client = &client;
            let download = scope.spawn(move || {
                client
                    .model(owner, name)
                    .download_file()
                    .filename(file)
                    .progress(Forward(tx))
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
            download.join().unwrap_or_else(|_| {
                Err(HFError::Other(format!(
                    "the download of {file} stopped unexpectedly"
                )))
            })
        })
    };
    let fail = |repo: &str, file: &str, e: HFError| {
        Error::InvalidInput(format!("download of {repo}: {file} failed: {e}"))
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
}
