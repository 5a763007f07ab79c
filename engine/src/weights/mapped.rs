//! One memory-mapped `.safetensors` file. Only the JSON header is parsed when it is opened; each
//! tensor is copied out of the mapping when a model asks for it (converted to the model's dtype on
//! the way) and its pages are then dropped from the process's resident set again. Peak memory is
//! therefore about the model plus one tensor, and a file already in the page cache is never
//! copied through a whole-file buffer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::convert::{convert_float, FloatVec};
use crate::error::{Error, Result};

/// One tensor of a [`MappedFile`], still in the file until a model takes it.
#[derive(Clone)]
pub(super) struct MappedTensor {
    file: Arc<MappedFile>,
    /// The name in the file (before any prefix strip), for error messages.
    key: String,
    stored: StoredDtype,
    shape: Vec<usize>,
    /// Byte range in the mapping (header included), checked against the file length on open.
    start: usize,
    end: usize,
}

/// A safetensors element type candle can hold; `U16` is widened to `U32` (as candle's reader does).
#[derive(Clone, Copy)]
enum StoredDtype {
    Native(DType),
    U16,
}

impl StoredDtype {
    fn from_file(d: safetensors::Dtype) -> Option<Self> {
        use safetensors::Dtype as S;
        Some(match d {
            S::U8 => Self::Native(DType::U8),
            S::U16 => Self::U16,
            S::U32 => Self::Native(DType::U32),
            S::I16 => Self::Native(DType::I16),
            S::I32 => Self::Native(DType::I32),
            S::I64 => Self::Native(DType::I64),
            S::BF16 => Self::Native(DType::BF16),
            S::F16 => Self::Native(DType::F16),
            S::F32 => Self::Native(DType::F32),
            S::F64 => Self::Native(DType::F64),
            S::F8_E4M3 => Self::Native(DType::F8E4M3),
            S::F6_E2M3 => Self::Native(DType::F6E2M3),
            S::F6_E3M2 => Self::Native(DType::F6E3M2),
            S::F4 => Self::Native(DType::F4),
            S::F8_E8M0 => Self::Native(DType::F8E8M0),
            _ => return None,
        })
    }

    fn dtype(self) -> DType {
        match self {
            Self::Native(d) => d,
            Self::U16 => DType::U32,
        }
    }
}

/// One memory-mapped `.safetensors` file.
pub(super) struct MappedFile {
    path: PathBuf,
    map: memmap2::Mmap,
}

/// Pages are given back to the kernel in whole blocks of this size, a multiple of every common
/// page size (4, 16 and 64 KiB), so a release never reaches a neighbouring tensor's bytes.
const RELEASE_BLOCK: usize = 64 * 1024;

impl MappedFile {
    /// Maps `path` and lists its tensors (names as in the file). Only the header is read; the
    /// safetensors crate checks that the tensors tile the data section up to the file's end, so
    /// every byte range handed out lies inside the mapping.
    pub(super) fn open(path: &Path) -> Result<Vec<(String, MappedTensor)>> {
        let unreadable = |e: &dyn std::fmt::Display| {
            Error::weights(path, format!("not a readable safetensors file: {e}"))
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the mapping is read-only and every tensor is copied out of it before use. As
        // with any memory map, another process truncating the file while it is open would make
        // later reads fault; checkpoints are not rewritten in place while a model loads.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| unreadable(&e))?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&map).map_err(|e| unreadable(&e))?;
        let data_start = header_len
            .checked_add(8)
            .ok_or_else(|| unreadable(&"header length overflows"))?;
        let file = Arc::new(Self {
            path: path.to_path_buf(),
            map,
        });
        let mut entries = Vec::new();
        for (key, info) in metadata.tensors() {
            let stored = StoredDtype::from_file(info.dtype).ok_or_else(|| {
                Error::weights(
                    path,
                    format!(
                        "tensor '{key}' has dtype {:?}, which candle cannot hold",
                        info.dtype
                    ),
                )
            })?;
            let (start, end) = info.data_offsets;
            let range = data_start
                .checked_add(start)
                .zip(data_start.checked_add(end))
                .filter(|&(s, e)| s <= e && e <= file.map.len())
                .ok_or_else(|| {
                    unreadable(&format!(
                        "tensor '{key}' lies outside the file ({start}..{end})"
                    ))
                })?;
            entries.push((
                key.clone(),
                MappedTensor {
                    file: file.clone(),
                    key,
                    stored,
                    shape: info.shape.clone(),
                    start: range.0,
                    end: range.1,
                },
            ));
        }
        Ok(entries)
    }
}

impl MappedTensor {
    /// Shape from the file header.
    pub(super) fn dims(&self) -> &[usize] {
        &self.shape
    }

    /// Dtype as candle holds it (16-bit unsigned integers widen to U32).
    pub(super) fn dtype(&self) -> DType {
        self.stored.dtype()
    }

    /// Copies the tensor out of the mapping, on the CPU in the file's dtype.
    pub(super) fn materialise(&self) -> candle_core::Result<Tensor> {
        let bytes = self.file.map.get(self.start..self.end).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: tensor '{}' lies outside the file",
                self.file.path.display(),
                self.key
            ))
        })?;
        let t = match self.stored {
            StoredDtype::Native(d) => Tensor::from_raw_buffer(bytes, d, &self.shape, &Device::Cpu),
            StoredDtype::U16 => {
                let v: Vec<u32> = bytes
                    .chunks_exact(2)
                    .map(|c| u32::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect();
                Tensor::from_vec(v, self.shape.as_slice(), &Device::Cpu)
            }
        }
        .map_err(|e| {
            candle_core::Error::Msg(format!(
                "{}: cannot read tensor '{}': {e}",
                self.file.path.display(),
                self.key
            ))
        })?;
        self.release_pages();
        Ok(t)
    }

    /// The tensor in `dtype` on the CPU. Between f16, bf16 and f32 the values are converted
    /// straight out of the mapping in one pass (no copy in the stored dtype, and f16 is widened
    /// with the vectorised slice conversion); the results are bit-identical to candle's
    /// `to_dtype`, which converts element by element with the same `half` functions.
    pub(super) fn materialise_as(&self, dtype: DType) -> candle_core::Result<Tensor> {
        let converted = match (self.stored, self.file.map.get(self.start..self.end)) {
            (StoredDtype::Native(stored), Some(bytes)) if stored != dtype => {
                convert_float(bytes, stored, dtype)
            }
            _ => None,
        };
        let Some(values) = converted else {
            return self.materialise()?.to_dtype(dtype);
        };
        let shape = self.shape.as_slice();
        let t = match values {
            FloatVec::F32(v) => Tensor::from_vec(v, shape, &Device::Cpu),
            FloatVec::F16(v) => Tensor::from_vec(v, shape, &Device::Cpu),
            FloatVec::BF16(v) => Tensor::from_vec(v, shape, &Device::Cpu),
        }?;
        self.release_pages();
        Ok(t)
    }

    /// Takes this tensor's pages out of the process's resident set now that they are copied, so
    /// loading does not add the whole file to the RSS on top of the model. The pages stay in the
    /// page cache (the next load is as fast) and a later read maps them in again.
    fn release_pages(&self) {
        #[cfg(unix)]
        {
            let first = self.start.div_ceil(RELEASE_BLOCK) * RELEASE_BLOCK;
            let last = self.end / RELEASE_BLOCK * RELEASE_BLOCK;
            if last > first {
                // SAFETY: the mapping is a shared, read-only file mapping (`Mmap::map`), so
                // MADV_DONTNEED only drops page-table entries: a later access faults the same
                // file bytes in again, nothing is zeroed. No slice of the range is alive here
                // (the tensor was copied out above), and the range is block-aligned inside this
                // tensor's own bytes. Failure only means the pages stay resident.
                let _ = unsafe {
                    self.file.map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        last - first,
                    )
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::weights::fixture::{bits, f16_tensor, write_fixture};
    use crate::weights::Checkpoint;

    #[test]
    fn mapped_f16_reads_like_the_eager_loader_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_fixture(dir.path());
        let eager = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let ckpt = Checkpoint::load(&path, Some("model"), Some("autoencoder.")).unwrap();

        let mut names: Vec<&str> = ckpt.names().collect();
        names.sort();
        assert_eq!(names, ["big.bias", "big.weight", "norm.weight", "steps"]);
        // Header information, nothing read.
        assert_eq!(ckpt.dims("big.weight"), Some(&[300usize, 700][..]));
        assert_eq!(ckpt.dtype("big.weight"), Some(DType::F16));
        assert_eq!(ckpt.dtype("steps"), Some(DType::I64));
        assert_eq!(ckpt.dims("ema.big.weight"), None);
        assert!(ckpt.get("ema.big.weight").unwrap().is_none());

        // `get` gives the stored values; again on a second call (the pages were released).
        for _ in 0..2 {
            let w = ckpt.get("big.weight").unwrap().unwrap();
            assert_eq!(w.dtype(), DType::F16);
            assert_eq!(bits(&w), bits(&eager["autoencoder.big.weight"]));
        }
        let steps = ckpt.get("steps").unwrap().unwrap();
        assert_eq!(steps.to_vec1::<i64>().unwrap(), [3, -4, 1 << 40]);

        for dtype in [DType::F32, DType::BF16] {
            let vb = ckpt.var_builder(dtype, &Device::Cpu);
            for (name, dims) in [
                ("big.weight", vec![300, 700]),
                ("big.bias", vec![300]),
                ("norm.weight", vec![7]),
            ] {
                let t = vb.get(dims.as_slice(), name).unwrap();
                assert_eq!(t.dtype(), dtype);
                assert_eq!(t.dims(), dims.as_slice());
                let want = eager[&format!("autoencoder.{name}")]
                    .to_dtype(dtype)
                    .unwrap();
                assert_eq!(bits(&t), bits(&want), "{name} as {dtype:?}");
            }
            // Spot values: f16 -> f32 is exact; bf16 keeps 8 mantissa bits.
            let w = vb
                .get((300, 700), "big.weight")
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            let first = w
                .get(0)
                .unwrap()
                .get(1)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let exact = half::f16::from_f32((0.37f32 + 0.5).sin() * 3.1 + 0.001).to_f32();
            match dtype {
                DType::F32 => assert_eq!(first, exact),
                _ => assert_eq!(first, half::bf16::from_f32(exact).to_f32()),
            }
        }
    }

    /// A hand-written file whose data section starts at an odd byte, so 2- and 4-byte values
    /// cannot be viewed in place; they are still read, through candle's unaligned path.
    #[test]
    fn unaligned_data_is_read_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd.safetensors");
        let values: Vec<half::f16> = [1.5f32, -2.25, 1e-3, 600.0]
            .iter()
            .map(|&x| half::f16::from_f32(x))
            .collect();
        let mut header = r#"{"w":{"dtype":"F16","shape":[2,2],"data_offsets":[0,8]}}"#.to_string();
        if header.len() & 1 == 0 {
            header.push(' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        for v in &values {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let ckpt = Checkpoint::load(&path, None, None).unwrap();
        for dtype in [DType::F16, DType::F32, DType::BF16] {
            let w = ckpt
                .var_builder(dtype, &Device::Cpu)
                .get((2, 2), "w")
                .unwrap();
            let got = w.to_dtype(DType::F32).unwrap().flatten_all().unwrap();
            let want: Vec<f32> = values
                .iter()
                .map(|v| match dtype {
                    DType::BF16 => half::bf16::from_f32(v.to_f32()).to_f32(),
                    _ => v.to_f32(),
                })
                .collect();
            assert_eq!(got.to_vec1::<f32>().unwrap(), want, "{dtype:?}");
        }
    }

    #[test]
    fn damaged_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(write_fixture(dir.path())).unwrap();
        let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("short", good[..5].to_vec()),
            ("truncated data", good[..good.len() - 3].to_vec()),
            ("truncated header", good[..8 + header_len / 2].to_vec()),
            ("one byte extra", [good.as_slice(), &[0]].concat()),
        ];
        let mut huge = good.clone();
        huge[..8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        cases.push(("huge header length", huge));
        let mut garbled = good.clone();
        garbled[8] = b'[';
        cases.push(("garbled header", garbled));
        for (what, bytes) in cases {
            let path = dir
                .path()
                .join(format!("{}.safetensors", what.replace(' ', "_")));
            std::fs::write(&path, &bytes).unwrap();
            let e = match Checkpoint::load(&path, None, None) {
                Ok(_) => panic!("{what}: loaded"),
                Err(e) => e.to_string(),
            };
            assert!(
                e.contains(&path.display().to_string())
                    && e.contains("not a readable safetensors file"),
                "{what}: {e}"
            );
        }
        let missing = dir.path().join("missing.safetensors");
        let e = Checkpoint::load(&missing, None, None)
            .err()
            .map(|e| e.to_string());
        assert_eq!(e, Some(format!("{}: file not found", missing.display())));
    }

    /// Lines of `/proc/self/maps` that map `path`.
    #[cfg(target_os = "linux")]
    fn mappings_of(path: &Path) -> Vec<String> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let p = path.display().to_string();
        maps.lines()
            .filter(|l| l.ends_with(&p))
            .map(str::to_string)
            .collect()
    }

    /// Resident KiB of the mapping of `path` (`/proc/self/smaps`).
    #[cfg(target_os = "linux")]
    fn resident_kib(path: &Path) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let p = path.display().to_string();
        let mut lines = smaps.lines();
        while let Some(l) = lines.next() {
            if l.ends_with(&p) {
                for l in lines.by_ref() {
                    if let Some(v) = l.strip_prefix("Rss:") {
                        return v.trim().trim_end_matches("kB").trim().parse().unwrap();
                    }
                }
            }
        }
        panic!("{} is not mapped", path.display());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn tensors_own_their_data_and_the_map_closes_with_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_fixture(&dir.path().canonicalize().unwrap());
        let eager = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
        let ckpt = Checkpoint::load(&path, None, Some("autoencoder.")).unwrap();
        assert_eq!(mappings_of(&path).len(), 1, "the file is mapped while open");
        let vb = ckpt.var_builder(DType::F16, &Device::Cpu);
        let w = vb.get((300, 700), "big.weight").unwrap();
        let got = ckpt.get("big.bias").unwrap().unwrap();
        drop(ckpt);
        assert_eq!(
            mappings_of(&path).len(),
            1,
            "a live VarBuilder keeps the map"
        );
        drop(vb);
        assert!(
            mappings_of(&path).is_empty(),
            "map still open: {:?}",
            mappings_of(&path)
        );
        // The file can go too: the tensors hold copies.
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bits(&w), bits(&eager["autoencoder.big.weight"]));
        assert_eq!(bits(&got), bits(&eager["autoencoder.big.bias"]));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn read_pages_leave_the_resident_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().canonicalize().unwrap().join("big.safetensors");
        let t = f16_tensor(&[2048, 1024], 0.25); // 4 MiB
        candle_core::safetensors::save(&HashMap::from([("w".to_string(), t.clone())]), &path)
            .unwrap();
        let ckpt = Checkpoint::load(&path, None, None).unwrap();
        let w = ckpt
            .var_builder(DType::F32, &Device::Cpu)
            .get((2048, 1024), "w")
            .unwrap();
        assert_eq!(bits(&w), bits(&t.to_dtype(DType::F32).unwrap()));
        // At most the blocks at both ends of the tensor (and the header page) stay mapped in.
        let rss = resident_kib(&path);
        assert!(
            rss <= 2 * RELEASE_BLOCK / 1024 + 64,
            "{rss} KiB of 4 MiB still resident"
        );
    }
}
