//! Reading checkpoints as published (`.pt` pickles and `.safetensors`) into a `VarBuilder`,
//! with strict bookkeeping: a model built from a [`Checkpoint`] can be asked afterwards which
//! tensors it never used, so a wrong file is reported instead of silently half-loaded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Tensors of one checkpoint file, keyed as in the file (after an optional prefix strip).
pub struct Checkpoint {
    path: PathBuf,
    tensors: HashMap<String, Tensor>,
    used: Arc<Mutex<HashSet<String>>>,
}

impl Checkpoint {
    /// Reads `.safetensors` directly, or a PyTorch pickle whose state dict sits under
    /// `container_key` (`"model"` for the DiT, `"state_dict"` for the VAE). Keys starting with
    /// `strip_prefix` keep only the remainder; keys without it are dropped when a prefix is given
    /// and at least one key carries it (the VAE `.pt` keeps unrelated entries beside `autoencoder.`).
    pub fn load(
        path: &Path,
        container_key: Option<&str>,
        strip_prefix: Option<&str>,
    ) -> Result<Self> {
        if !path.exists() {
            return Err(Error::weights(path, "file not found"));
        }
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let raw: Vec<(String, Tensor)> = if is_safetensors {
            candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| Error::weights(path, format!("not a readable safetensors file: {e}")))?
                .into_iter()
                .collect()
        } else {
            candle_core::pickle::read_all_with_key(path, container_key).map_err(|e| {
                Error::weights(path, format!("not a readable PyTorch checkpoint: {e}"))
            })?
        };
        if raw.is_empty() {
            let hint = match container_key {
                Some(k) => format!(" (expected a dict with key '{k}' holding the state dict)"),
                None => String::new(),
            };
            return Err(Error::weights(path, format!("holds no tensors{hint}")));
        }
        let tensors = strip(raw, strip_prefix);
        Ok(Self::from_tensors(path, tensors))
    }

    pub fn from_tensors(path: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            path: path.into(),
            tensors,
            used: Arc::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// A `VarBuilder` over these tensors, converting to `dtype` on `device` as each is taken.
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

fn strip(raw: Vec<(String, Tensor)>, prefix: Option<&str>) -> HashMap<String, Tensor> {
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
    tensors: HashMap<String, Tensor>,
    used: Arc<Mutex<HashSet<String>>>,
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
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.shape() != &s {
            candle_core::bail!(
                "{}: tensor '{name}' has shape {:?}, the model expects {:?}",
                self.path.display(),
                t.dims(),
                s.dims()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "{}: tensor '{name}' is missing (the model needs it)",
                self.path.display()
            ))
        })?;
        self.used.lock().insert(name.to_string());
        t.to_dtype(dtype)?.to_device(dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// Shape-only stand-in for a checkpoint: builds a model at real size without its weights.
/// Every requested tensor is a zero-strided broadcast of one element, so a 3-billion-value model
/// costs a few bytes; requests are recorded for a name/shape comparison with a published layout.
pub struct LayoutProbe {
    expected: BTreeMap<String, Vec<usize>>,
    requested: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
}

impl LayoutProbe {
    pub fn new(expected: BTreeMap<String, Vec<usize>>) -> Self {
        Self {
            expected,
            requested: Arc::default(),
        }
    }

    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend = ProbeBackend {
            expected: self.expected.clone(),
            requested: self.requested.clone(),
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// Problems found: expected tensors never requested, and requests missing or mis-shaped.
    pub fn mismatches(&self) -> Vec<String> {
        let requested = self.requested.lock();
        let mut out = Vec::new();
        for (name, shape) in requested.iter() {
            match self.expected.get(name) {
                None => out.push(format!(
                    "model asks for '{name}' {shape:?}, not in the layout"
                )),
                Some(e) if e != shape => out.push(format!(
                    "'{name}': layout has {e:?}, model asks for {shape:?}"
                )),
                Some(_) => {}
            }
        }
        for name in self.expected.keys() {
            if !requested.contains_key(name) {
                out.push(format!("'{name}' in the layout is never used by the model"));
            }
        }
        out
    }

    pub fn requested(&self) -> BTreeMap<String, Vec<usize>> {
        self.requested.lock().clone()
    }
}

struct ProbeBackend {
    expected: BTreeMap<String, Vec<usize>>,
    requested: Arc<Mutex<BTreeMap<String, Vec<usize>>>>,
}

impl SimpleBackend for ProbeBackend {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        self.requested
            .lock()
            .insert(name.to_string(), s.dims().to_vec());
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let dims = self.expected.get(name).cloned().ok_or_else(|| {
            candle_core::Error::Msg(format!("tensor '{name}' is not in the layout"))
        })?;
        self.requested.lock().insert(name.to_string(), dims.clone());
        Tensor::zeros((), dtype, dev)?.broadcast_as(dims)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.expected.contains_key(name)
    }
}

// ---- Multi-file and filtered loading (Hugging Face model folders, e.g. the T5 text encoder) ----

impl Checkpoint {
    /// Reads the tensors whose names pass `keep` from one or more `.safetensors` files (a Hugging
    /// Face sharded checkpoint lists them in `model.safetensors.index.json`). The files are
    /// memory-mapped, so skipped tensors (e.g. the decoder half of a full T5 file) are never read.
    /// `display` names the checkpoint in error messages; a name found in two files is an error.
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
            // SAFETY: the mapping lives only inside this loop iteration and every kept tensor is
            // copied out of it; as with any mmap, the file must not be truncated meanwhile.
            let st =
                unsafe { candle_core::safetensors::MmapedSafetensors::new(file) }.map_err(|e| {
                    Error::weights(file, format!("not a readable safetensors file: {e}"))
                })?;
            for (name, _) in st.tensors() {
                if !keep(&name) {
                    continue;
                }
                let t = st.load(&name, &Device::Cpu).map_err(|e| {
                    Error::weights(file, format!("cannot read tensor '{name}': {e}"))
                })?;
                if tensors.insert(name.clone(), t).is_some() {
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
        Ok(Self::from_tensors(display, tensors))
    }

    /// Joins checkpoints read separately (PyTorch shards) into one; a name found twice is an error.
    pub fn merge(display: &Path, parts: Vec<Checkpoint>) -> Result<Self> {
        let mut tensors = HashMap::new();
        for part in parts {
            for (name, t) in part.tensors {
                if tensors.insert(name.clone(), t).is_some() {
                    return Err(Error::weights(
                        &part.path,
                        format!("tensor '{name}' appears in two shards"),
                    ));
                }
            }
        }
        Ok(Self::from_tensors(display, tensors))
    }
}
