//! A cheap check that a model's checkpoint files are what they claim, without reading weights.
//!
//! Why: a file cut short or replaced by garbage (an interrupted copy, a broken Hugging Face
//! cache) used to count as installed: `models list` showed it and `models fetch` kept it, and
//! only a load minutes later failed. A `.safetensors` file is checked by its header (every
//! tensor's bytes must lie inside the file); a PyTorch `.pt` by its zip directory, which sits
//! at the end and so is missing from a truncated file.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::ModelFolder;
use crate::error::{Error, Result};

/// Size of a zip's end-of-central-directory record plus its longest comment.
const ZIP_TAIL: u64 = 22 + 65_535;

/// Checks one checkpoint file's structure (see the module docs).
pub fn check_checkpoint(path: &Path) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Err(Error::weights(path, "the file is empty"));
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        // SAFETY: read-only map of a file this process does not write; read_metadata only
        // parses the header and compares offsets with the length.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| Error::weights(path, format!("damaged safetensors file: {e}")))?;
        let end = meta
            .tensors()
            .values()
            .map(|t| t.data_offsets.1)
            .max()
            .unwrap_or(0);
        if (8 + header_len + end) as u64 > len {
            return Err(Error::weights(path, "damaged safetensors file: cut short"));
        }
        return Ok(());
    }
    let mut head = [0u8; 2];
    file.read_exact(&mut head).map_err(|e| Error::io(path, e))?;
    if head[0] == 0x80 {
        return Ok(()); // a legacy (pre-zip) PyTorch pickle: nothing cheap to check
    }
    if &head != b"PK" {
        return Err(Error::weights(
            path,
            "not a PyTorch checkpoint (neither a zip archive nor a pickle)",
        ));
    }
    let tail = len.min(ZIP_TAIL);
    file.seek(SeekFrom::Start(len - tail))
        .map_err(|e| Error::io(path, e))?;
    let mut buf = Vec::with_capacity(tail as usize);
    file.take(tail)
        .read_to_end(&mut buf)
        .map_err(|e| Error::io(path, e))?;
    if !buf.windows(4).any(|w| w == b"PK\x05\x06") {
        return Err(Error::weights(
            path,
            "damaged PyTorch checkpoint: its zip directory is missing (the file was cut short)",
        ));
    }
    Ok(())
}

/// The first damaged checkpoint of `folder` (DiT, VAE, text encoder), with why. Missing files
/// are not damaged ones (a download fetches them).
pub fn damaged_part(folder: &ModelFolder) -> Option<(PathBuf, Error)> {
    let mut files = vec![folder.dit.clone(), folder.vae.clone()];
    if let Ok(entries) = std::fs::read_dir(&folder.text_encoder) {
        let mut te: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        te.sort();
        files.extend(te);
    }
    files
        .into_iter()
        .filter(|p| p.exists())
        .find_map(|p| check_checkpoint(&p).err().map(|e| (p, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_checkpoints_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/fixtures/ezaudio-ref/model-tiny");
        let pt = std::fs::read(fixtures.join("dit.pt")).unwrap();
        let st = std::fs::read(fixtures.join("text_encoder/model.safetensors")).unwrap();
        let cases: [(&str, Vec<u8>, bool); 6] = [
            ("whole.pt", pt.clone(), true),
            ("whole.safetensors", st.clone(), true),
            ("garbage.pt", vec![0x5a; 8192], false),
            ("cut.pt", pt[..pt.len() / 2].to_vec(), false),
            ("cut.safetensors", st[..st.len() - 10].to_vec(), false),
            ("empty.safetensors", Vec::new(), false),
        ];
        for (name, bytes, good) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let r = check_checkpoint(&p);
            assert_eq!(r.is_ok(), good, "{name}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains(name), "{e}");
            }
        }
    }
}
