//! Reading checkpoints as published (`.pt` pickles and `.safetensors`) into a `VarBuilder`,
//! with strict bookkeeping: a model built from a [`Checkpoint`] can be asked afterwards which
//! tensors it never used, so a wrong file is reported instead of silently half-loaded.
//!
//! `.safetensors` files are memory-mapped and each tensor is read only when a model asks for it
//! (`mapped`), so peak memory is about the model plus one tensor. Every tensor handed out owns
//! its data; the mapping is closed when the [`Checkpoint`] and the `VarBuilder`s made from it are
//! dropped. PyTorch pickles are read whole.

mod convert;
#[cfg(test)]
mod fixture;
mod mapped;
mod probe;
mod random;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use mapped::{MappedFile, MappedTensor};
use parking_lot::Mutex;

pub use probe::LayoutProbe;
pub use random::{random_vb, RandomWeights};

use crate::error::{Error, Result};

/// Tensors of one checkpoint, keyed as in the file (after an optional prefix strip).
pub struct Checkpoint {
    path: PathBuf,
    tensors: Arc<HashMap<String, Source>>,
    used: Arc<Mutex<HashSet<String>>>,
}

/// Where a checkpoint tensor lives until a model takes it.
#[derive(Clone)]
enum Source {
    /// Already in memory (pickles, tensors made in code).
    Loaded(Tensor),
    /// Bytes of a memory-mapped `.safetensors` file, copied out on request.
    Mapped(MappedTensor),
}

impl Source {
    fn dims(&self) -> &[usize] {
        match self {
            Source::Loaded(t) => t.dims(),
            Source::Mapped(m) => m.dims(),
        }
    }

    fn dtype(&self) -> DType {
        match self {
            Source::Loaded(t) => t.dtype(),
            Source::Mapped(m) => m.dtype(),
        }
    }

    fn tensor(&self) -> candle_core::Result<Tensor> {
        match self {
            Source::Loaded(t) => Ok(t.clone()),
            Source::Mapped(m) => m.materialise(),
        }
    }

    /// The tensor on the CPU in `dtype`.
    fn tensor_as(&self, dtype: DType) -> candle_core::Result<Tensor> {
        match self {
            Source::Loaded(t) => t.to_dtype(dtype),
            Source::Mapped(m) => m.materialise_as(dtype),
        }
    }
}

impl Checkpoint {
    /// Opens `.safetensors` as a memory map (tensors are read when asked for), or reads a
    /// PyTorch pickle whose state dict sits under `container_key` (`"model"` for the DiT,
    /// `"state_dict"` for the VAE). Keys starting with `strip_prefix` keep only the remainder;
    /// keys without it are dropped when a prefix is given and at least one key carries it (the
    /// VAE `.pt` keeps unrelated entries beside `autoencoder.`).
    pub fn load(
        path: &Path,
        container_key: Option<&str>,
        strip_prefix: Option<&str>,
    ) -> Result<Self> {
        if !path.exists() {
            return Err(Error::weights(path, "file not found"));
        }
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let raw: Vec<(String, Source)> = if is_safetensors {
            MappedFile::open(path)?
                .into_iter()
                .map(|(k, m)| (k, Source::Mapped(m)))
                .collect()
        } else {
            candle_core::pickle::read_all_with_key(path, container_key)
                .map_err(|e| {
                    Error::weights(path, format!("not a readable PyTorch checkpoint: {e}"))
                })?
                .into_iter()
                .map(|(k, t)| (k, Source::Loaded(t)))
                .collect()
        };
        if raw.is_empty() {
            let hint = match container_key {
                Some(k) if !is_safetensors => {
                    format!(" (expected a dict with key '{k}' holding the state dict)")
                }
                _ => String::new(),
            };
            return Err(Error::weights(path, format!("holds no tensors{hint}")));
        }
        Ok(Self::from_sources(path, strip(raw, strip_prefix)))
    }

    pub fn from_tensors(path: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        let sources = tensors
            .into_iter()
            .map(|(k, t)| (k, Source::Loaded(t)))
            .collect();
        Self::from_sources(path, sources)
    }

    fn from_sources(path: impl Into<PathBuf>, tensors: HashMap<String, Source>) -> Self {
        Self {
            path: path.into(),
            tensors: Arc::new(tensors),
            used: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Shape of tensor `name`, from the file header (nothing is read).
    pub fn dims(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(Source::dims)
    }

    /// Dtype of tensor `name` as stored (nothing is read; 16-bit unsigned integers read as U32).
    pub fn dtype(&self, name: &str) -> Option<DType> {
        self.tensors.get(name).map(Source::dtype)
    }

    /// Tensor `name` on the CPU in its stored dtype, read from the file now (for a memory-mapped
    /// checkpoint each call copies it out again); `Ok(None)` when there is no such tensor. Does
    /// not count as use by a model.
    pub fn get(&self, name: &str) -> Result<Option<Tensor>> {
        self.tensors
            .get(name)
            .map(Source::tensor)
            .transpose()
            .map_err(Error::from)
    }

    /// A `VarBuilder` over these tensors, reading and converting each to `dtype` on `device`
    /// when it is taken. It keeps the file mapped while it (or a clone) is alive.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend = TrackingBackend {
            path: self.path.clone(),
            tensors: self.tensors.clone(),
            used: self.used.clone(),
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// Names never requested by a model built from [`Self::var_builder`], sorted.
    pub fn unused(&self) -> Vec<String> {
        let used = self.used.lock();
        let mut names: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect();
        names.sort();
        names
    }

    /// Fails when a tensor of the file was not consumed, except names matched by `ignore`.
    pub fn ensure_all_used(&self, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let unused: Vec<String> = self.unused().into_iter().filter(|n| !ignore(n)).collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(8).map(String::as_str).collect();
        Err(Error::weights(
            &self.path,
            format!(
                "{} tensor(s) were not used by the model (wrong config for this checkpoint?): {}{}",
                unused.len(),
                shown.join(", "),
                if unused.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        ))
    }
}

fn strip<T>(raw: Vec<(String, T)>, prefix: Option<&str>) -> HashMap<String, T> {
    match prefix {
        Some(p) if raw.iter().any(|(k, _)| k.starts_with(p)) => raw
            .into_iter()
            .filter_map(|(k, t)| k.strip_prefix(p).map(|s| (s.to_string(), t)))
            .collect(),
        _ => raw.into_iter().collect(),
    }
}

struct TrackingBackend {
    path: PathBuf,
    tensors: Arc<HashMap<String, Source>>,
    used: Arc<Mutex<HashSet<String>>>,
}

impl TrackingBackend {
    fn source(&self, name: &str) -> candle_core::Result<&Source> {
        self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: tensor '{name}' is missing (the model needs it)",
                self.path.display()
            ))
        })
    }

    fn take(
        &self,
        name: &str,
        src: &Source,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        // An integer tensor where weights are expected would otherwise be cast silently (its
        // integers read as weight values): a damaged or foreign checkpoint.
        if dtype.is_float() && !src.dtype().is_float() {
            candle_core::bail!(
                "{}: tensor '{name}' is stored as {:?}; the model expects floating-point weights \
                 (f32, f16 or bf16): a damaged or foreign checkpoint",
                self.path.display(),
                src.dtype()
            );
        }
        self.used.lock().insert(name.to_string());
        src.tensor_as(dtype)?.to_device(dev)
    }
}

impl SimpleBackend for TrackingBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let src = self.source(name)?;
        // Checked on the header's shape, before any byte is read.
        if src.dims() != s.dims() {
            candle_core::bail!(
                "{}: tensor '{name}' has shape {:?}, the model expects {:?}",
                self.path.display(),
                src.dims(),
                s.dims()
            );
        }
        self.take(name, src, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.take(name, self.source(name)?, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

// ---- Multi-file and filtered loading (Hugging Face model folders, e.g. the T5 text encoder) ----

impl Checkpoint {
    /// The tensors whose names pass `keep` from one or more `.safetensors` files (a Hugging Face
    /// sharded checkpoint lists them in `model.safetensors.index.json`). The files are
    /// memory-mapped like [`Self::load`]'s: kept tensors are read when a model asks for them and
    /// skipped ones (e.g. the decoder half of a full T5 file) never. `display` names the
    /// checkpoint in error messages; a name found in two files is an error.
    pub fn load_safetensors_filtered(
        files: &[PathBuf],
        display: &Path,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let mut tensors = HashMap::new();
        for file in files {
            if !file.exists() {
                return Err(Error::weights(file, "file not found"));
            }
            for (name, tensor) in MappedFile::open(file)? {
                if !keep(&name) {
                    continue;
                }
                if tensors
                    .insert(name.clone(), Source::Mapped(tensor))
                    .is_some()
                {
                    return Err(Error::weights(
                        file,
                        format!("tensor '{name}' appears in two shards"),
                    ));
                }
            }
        }
        if tensors.is_empty() {
            return Err(Error::weights(
                display,
                "holds no tensors the model could use",
            ));
        }
        Ok(Self::from_sources(display, tensors))
    }

    /// Joins checkpoints read separately (PyTorch shards) into one; a name found twice is an error.
    pub fn merge(display: &Path, parts: Vec<Checkpoint>) -> Result<Self> {
        let mut tensors = HashMap::new();
        for part in parts {
            for (name, src) in part.tensors.iter() {
                if tensors.insert(name.clone(), src.clone()).is_some() {
                    return Err(Error::weights(
                        &part.path,
                        format!("tensor '{name}' appears in two shards"),
                    ));
                }
            }
        }
        Ok(Self::from_sources(display, tensors))
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::write_fixture;
    use super::*;

    #[test]
    fn integer_tensors_are_not_cast_into_weights() {
        let t = Tensor::new(&[1u32, 2, 3], &Device::Cpu).unwrap();
        let ckpt = Checkpoint::from_tensors("ints.pt", HashMap::from([("w".to_string(), t)]));
        let e = ckpt
            .var_builder(DType::F32, &Device::Cpu)
            .get(3, "w")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ints.pt: tensor 'w' is stored as U32"), "{e}");
    }

    #[test]
    fn shape_and_name_errors_name_the_file_and_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_fixture(dir.path());
        let ckpt = Checkpoint::load(&path, None, Some("autoencoder.")).unwrap();
        let vb = ckpt.var_builder(DType::F32, &Device::Cpu);
        let e = vb.get((700, 300), "big.weight").unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(
            e.contains("tensor 'big.weight' has shape [300, 700], the model expects [700, 300]"),
            "{e}"
        );
        let e = vb.get(4, "nope").unwrap_err().to_string();
        assert!(
            e.contains("tensor 'nope' is missing (the model needs it)"),
            "{e}"
        );
        // A failed shape check is not a use.
        assert!(ckpt.unused().contains(&"big.weight".to_string()));
    }

    #[test]
    fn unused_tensors_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_fixture(dir.path());
        let ckpt = Checkpoint::load(&path, None, Some("autoencoder.")).unwrap();
        assert_eq!(
            ckpt.unused(),
            ["big.bias", "big.weight", "norm.weight", "steps"]
        );
        let vb = ckpt.var_builder(DType::BF16, &Device::Cpu).pp("big");
        vb.get((300, 700), "weight").unwrap();
        vb.get_unchecked("bias").unwrap();
        assert_eq!(ckpt.unused(), ["norm.weight", "steps"]);
        let e = ckpt.ensure_all_used(|_| false).unwrap_err().to_string();
        assert!(
            e.contains("2 tensor(s) were not used by the model")
                && e.contains("norm.weight, steps"),
            "{e}"
        );
        ckpt.ensure_all_used(|n| n == "norm.weight" || n == "steps")
            .unwrap();
        // `Checkpoint::get` is not a use by the model.
        ckpt.get("steps").unwrap();
        assert_eq!(ckpt.unused(), ["norm.weight", "steps"]);
    }

    #[test]
    fn header_only_file_holds_no_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.safetensors");
        let header = b"{}      ";
        std::fs::write(
            &path,
            [&(header.len() as u64).to_le_bytes()[..], header].concat(),
        )
        .unwrap();
        let e = Checkpoint::load(&path, Some("model"), None)
            .err()
            .map(|e| e.to_string());
        assert_eq!(e, Some(format!("{}: holds no tensors", path.display())));
    }
}
