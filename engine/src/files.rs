//! Output files replaced whole or not at all.
//!
//! Why: writing in place truncates the destination first, so a kill, a full disk or a crash
//! mid-write destroys the old file and leaves a partial new one; two processes writing the same
//! new path both pass an "exists?" check and interleave. Every output therefore goes to a
//! temporary file in the destination's folder (same file system, so the final rename is
//! atomic), is flushed to disk, and only then renamed into place:
//!
//! * [`stage`] opens the temporary file; dropping a [`Staged`] without committing removes it;
//! * [`commit_all`] syncs a group of staged files (a WAV and its sidecar) and renames them into
//!   place. A failure while writing or syncing leaves every old file untouched. With
//!   `overwrite: false` each rename is create-new (`renameat2(RENAME_NOREPLACE)` or a hard
//!   link): of two processes racing for one path, one wins and the other gets an error, and
//!   files this group already placed are removed again so it never leaves half a pair. With
//!   `overwrite: true` the renames of a group are still separate calls: a crash between two of
//!   them (microseconds, after every byte is on disk) can pair a new WAV with its old sidecar;
//!   a write error never can, since writing and syncing finish before the first rename;
//! * [`stage_dir`] does the same for a whole folder (`models convert`): it is built under a
//!   temporary name beside the destination and renamed into place only when complete, so a
//!   failed conversion leaves nothing behind;
//! * [`check_destination`] is the cheap preflight (run before minutes of work): the folder can
//!   be created and written, and the path is not a folder or a device, FIFO or socket, which
//!   cannot be replaced by a rename and are refused rather than written through.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{Error, Result};

/// A temporary file beside `dest`, waiting for [`commit_all`].
#[derive(Debug)]
pub struct Staged {
    tmp: NamedTempFile,
    dest: PathBuf,
}

impl Staged {
    /// The temporary file to write into.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// Where the file goes on commit.
    pub fn dest(&self) -> &Path {
        &self.dest
    }
}

/// The folder `dest` lives in (`.` for a bare file name).
fn folder_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Refuses what a rename cannot replace: folders and special files (devices, FIFOs, sockets).
fn check_kind(dest: &Path) -> Result<()> {
    let Ok(meta) = std::fs::metadata(dest) else {
        return Ok(()); // does not exist (yet): fine
    };
    if meta.is_dir() {
        return Err(Error::InvalidInput(format!(
            "{} is a folder; give a file path inside it",
            dest.display()
        )));
    }
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!(
            "{} is not a regular file (a device, FIFO or socket); outputs are written to a \
             temporary file and renamed into place, so give a file path",
            dest.display()
        )));
    }
    Ok(())
}

/// Creates `dest`'s folder if needed and proves it writable by creating (and removing) a
/// temporary file there; refuses folders and special files as destinations.
pub fn check_destination(dest: &Path) -> Result<()> {
    check_kind(dest)?;
    let dir = folder_of(dest);
    if dir.exists() && !dir.is_dir() {
        return Err(Error::InvalidInput(format!(
            "cannot write {}: {} is not a folder",
            dest.display(),
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    NamedTempFile::new_in(dir)
        .map(drop)
        .map_err(|e| Error::write(dest, e))
}

/// The name of a staging file or folder for `dest`: `.name.XXXXXX.tmp`, so a leftover is
/// recognisable.
fn staging_prefix(dest: &Path) -> String {
    format!(
        ".{}.",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// A temporary file in `dest`'s folder, named after it (see [`staging_prefix`]).
pub fn stage(dest: &Path) -> Result<Staged> {
    check_kind(dest)?;
    let tmp = tempfile::Builder::new()
        .prefix(&staging_prefix(dest))
        .suffix(".tmp")
        .tempfile_in(folder_of(dest))
        .map_err(|e| Error::write(dest, e))?;
    Ok(Staged {
        tmp,
        dest: dest.to_path_buf(),
    })
}

/// Syncs every staged file, then renames each into place (see the module docs). On any error
/// the remaining temporary files are removed; with `overwrite: false` files already placed by
/// this call are removed too, so the group lands whole or not at all.
pub fn commit_all(staged: Vec<Staged>, overwrite: bool) -> Result<()> {
    for s in &staged {
        s.tmp
            .as_file()
            .sync_all()
            .map_err(|e| Error::write(&s.dest, e))?;
    }
    let mut placed: Vec<PathBuf> = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for s in staged {
        let dest = s.dest.clone();
        let result = if overwrite {
            s.tmp.persist(&dest).map(drop)
        } else {
            s.tmp.persist_noclobber(&dest).map(drop)
        };
        if let Err(e) = result {
            if !overwrite {
                for p in &placed {
                    let _ = std::fs::remove_file(p);
                }
            }
            let err = e.error;
            return Err(if err.kind() == io::ErrorKind::AlreadyExists {
                Error::write(
                    &dest,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "it appeared while this output was being made (another process?); \
                         nothing was replaced",
                    ),
                )
            } else {
                Error::write(&dest, err)
            });
        }
        let dir = folder_of(&dest).to_path_buf();
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        placed.push(dest);
    }
    // Make the renames themselves durable; a folder that cannot be synced is not an error.
    for d in dirs {
        if let Ok(f) = File::open(&d) {
            let _ = f.sync_all();
        }
    }
    Ok(())
}

/// A folder being built beside `dest`; dropped without [`StagedDir::commit`], it is removed.
#[derive(Debug)]
pub struct StagedDir {
    tmp: tempfile::TempDir,
    dest: PathBuf,
}

/// Starts building the folder `dest`, which must not exist or be empty (checked now, before any
/// work; the rename at commit checks again).
pub fn stage_dir(dest: &Path) -> Result<StagedDir> {
    if let Ok(meta) = std::fs::metadata(dest) {
        let empty = meta.is_dir()
            && std::fs::read_dir(dest)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(Error::InvalidInput(format!(
                "{} already exists and is not an empty folder; choose a new or empty folder",
                dest.display()
            )));
        }
    }
    let dir = folder_of(dest);
    std::fs::create_dir_all(dir).map_err(|e| Error::write(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(&staging_prefix(dest))
        .suffix(".tmp")
        .tempdir_in(dir)
        .map_err(|e| Error::write(dest, e))?;
    Ok(StagedDir {
        tmp,
        dest: dest.to_path_buf(),
    })
}

fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            sync_tree(&p)?;
        } else {
            File::open(&p)?.sync_all()?;
        }
    }
    File::open(dir)?.sync_all()
}

impl StagedDir {
    /// The temporary folder to fill.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Syncs every file and renames the folder to its destination (replacing at most an empty
    /// folder); on failure the temporary folder is removed.
    pub fn commit(self) -> Result<()> {
        sync_tree(self.tmp.path()).map_err(|e| Error::write(&self.dest, e))?;
        if let Err(e) = std::fs::rename(self.tmp.path(), &self.dest) {
            return Err(Error::write(
                &self.dest,
                if self.dest.exists() {
                    io::Error::new(
                        e.kind(),
                        format!("it was filled meanwhile (another process?): {e}"),
                    )
                } else {
                    e
                },
            ));
        }
        // Renamed away: nothing is left for the TempDir to remove.
        let _ = self.tmp.keep();
        if let Ok(f) = File::open(folder_of(&self.dest)) {
            let _ = f.sync_all();
        }
        Ok(())
    }
}

/// Writes `bytes` to `dest` through [`stage`] and [`commit_all`].
pub fn write_atomic(dest: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    use std::io::Write as _;
    let mut s = stage(dest)?;
    s.file()
        .write_all(bytes)
        .map_err(|e| Error::write(dest, e))?;
    commit_all(vec![s], overwrite)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn pair_lands_together_and_old_pair_survives_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("x.wav"), dir.path().join("x.wav.json"));
        std::fs::write(&a, b"old wav").unwrap();
        std::fs::write(&b, b"old json").unwrap();
        // Staged but dropped (a failure before commit): the old pair stays, no temp is left.
        {
            let mut s = stage(&a).unwrap();
            s.file().write_all(b"half").unwrap();
        }
        assert_eq!(std::fs::read(&a).unwrap(), b"old wav");
        assert!(leftovers(dir.path()).is_empty());
        // Create-new refuses both and keeps both.
        let (mut sa, mut sb) = (stage(&a).unwrap(), stage(&b).unwrap());
        sa.file().write_all(b"new wav").unwrap();
        sb.file().write_all(b"new json").unwrap();
        let e = commit_all(vec![sa, sb], false).unwrap_err().to_string();
        assert!(e.starts_with("cannot write"), "{e}");
        assert_eq!(std::fs::read(&b).unwrap(), b"old json");
        // Overwrite replaces both.
        let (mut sa, mut sb) = (stage(&a).unwrap(), stage(&b).unwrap());
        sa.file().write_all(b"new wav").unwrap();
        sb.file().write_all(b"new json").unwrap();
        commit_all(vec![sa, sb], true).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new wav");
        assert_eq!(std::fs::read(&b).unwrap(), b"new json");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn create_new_never_leaves_half_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("y.wav"), dir.path().join("y.wav.json"));
        let (mut sa, sb) = (stage(&a).unwrap(), stage(&b).unwrap());
        sa.file().write_all(b"mine").unwrap();
        // Another process placed the sidecar meanwhile.
        std::fs::write(&b, b"theirs").unwrap();
        let e = commit_all(vec![sa, sb], false).unwrap_err().to_string();
        assert!(e.contains("another process"), "{e}");
        assert!(!a.exists(), "the WAV of a half-placed pair was left behind");
        assert_eq!(std::fs::read(&b).unwrap(), b"theirs");
    }

    #[test]
    fn racing_writers_one_wins_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("race.bin");
        let results: Vec<Result<()>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8u8)
                .map(|i| {
                    let dest = dest.clone();
                    s.spawn(move || write_atomic(&dest, &vec![i; 1 << 16], false))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        let bytes = std::fs::read(&dest).unwrap();
        assert_eq!(bytes.len(), 1 << 16);
        assert!(bytes.iter().all(|&v| v == bytes[0]), "interleaved output");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn staged_folders_appear_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model");
        {
            let s = stage_dir(&dest).unwrap();
            std::fs::write(s.path().join("a"), b"x").unwrap();
        } // a failed conversion
        assert!(!dest.exists());
        assert!(leftovers(dir.path()).is_empty());
        std::fs::create_dir(&dest).unwrap(); // an empty folder may be replaced
        let s = stage_dir(&dest).unwrap();
        std::fs::create_dir(s.path().join("vae")).unwrap();
        std::fs::write(s.path().join("vae/b"), b"y").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read(dest.join("vae/b")).unwrap(), b"y");
        let e = stage_dir(&dest).unwrap_err().to_string();
        assert!(e.contains("not an empty folder"), "{e}");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn destinations_that_cannot_be_written_fail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_destination(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is a folder"), "{e}");
        let e = check_destination(Path::new("/dev/null"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let e = check_destination(Path::new("/proc/nope/out.wav"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot write /proc/nope"), "{e}");
        let nested = dir.path().join("a/b/c.wav");
        check_destination(&nested).unwrap();
        assert!(dir.path().join("a/b").is_dir());
        assert!(leftovers(&dir.path().join("a/b")).is_empty());
    }
}
