//! Reading checkpoints as published (`.pt` pickles and `.safetensors`) into a `VarBuilder`,
//! with strict bookkeeping: a model built from a [`Checkpoint`] can be asked afterwards which
//! tensors it never used, so a wrong file is reported instead of silently half-loaded.
//!
//! `.safetensors` files are memory-mapped, not read: only the JSON header is parsed when the
//! checkpoint is opened, and each tensor is copied out of the mapping when a model asks for it
//! (converted to the model's dtype on the way, then moved to its device), and its pages are
//! dropped from the process's resident set again. Peak memory is therefore about the model plus
//! one tensor, and a file already in the page cache is never copied through a whole-file buffer.
//! Every tensor handed out owns its data; the mapping is closed when the [`Checkpoint`] and the
//! `VarBuilder`s made from it are dropped. PyTorch pickles are read whole, as before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use parking_lot::Mutex;

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

#[derive(Clone)]
struct MappedTensor {
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
struct MappedFile {
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
    fn open(path: &Path) -> Result<Vec<(String, Source)>> {
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
                Source::Mapped(MappedTensor {
                    file: file.clone(),
                    key,
                    stored,
                    shape: info.shape.clone(),
                    start: range.0,
                    end: range.1,
                }),
            ));
        }
        Ok(entries)
    }
}

impl MappedTensor {
    /// Copies the tensor out of the mapping, on the CPU in the file's dtype.
    fn materialise(&self) -> candle_core::Result<Tensor> {
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
    fn materialise_as(&self, dtype: DType) -> candle_core::Result<Tensor> {
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

enum FloatVec {
    F32(Vec<f32>),
    F16(Vec<half::f16>),
    BF16(Vec<half::bf16>),
}

/// Elements per step when narrowing through an f32 scratch buffer.
const CONVERT_CHUNK: usize = 1024;

/// `bytes` (`from` values in native byte order, as candle's own reader takes them) as `to`, for two different types among f16, bf16 and
/// f32; `None` for other pairs or bytes not aligned for their type (the caller then goes
/// through candle). Each conversion is the one candle's CPU `to_dtype` applies per element:
/// `to_f32` to widen, `from_f32` of the f32 value to narrow.
fn convert_float(bytes: &[u8], from: DType, to: DType) -> Option<FloatVec> {
    use half::slice::HalfFloatSliceExt;
    use half::{bf16, f16};

    fn widen<H>(src: &[H]) -> Vec<f32>
    where
        [H]: HalfFloatSliceExt,
    {
        // A zeroed allocation: fresh pages from the kernel, no extra pass.
        let mut out = vec![0f32; src.len()];
        src.convert_to_f32_slice(&mut out);
        out
    }
    fn narrow<H, T>(src: &[H], f: impl Fn(f32) -> T) -> Vec<T>
    where
        [H]: HalfFloatSliceExt,
    {
        let mut out = Vec::with_capacity(src.len());
        let mut scratch = [0f32; CONVERT_CHUNK];
        for chunk in src.chunks(CONVERT_CHUNK) {
            let wide = &mut scratch[..chunk.len()];
            chunk.convert_to_f32_slice(wide);
            out.extend(wide.iter().map(|&x| f(x)));
        }
        out
    }
    Some(match (from, to) {
        (DType::F16, DType::F32) => {
            let src: &[f16] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::F32(widen(src))
        }
        (DType::BF16, DType::F32) => {
            let src: &[bf16] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::F32(widen(src))
        }
        (DType::F16, DType::BF16) => {
            let src: &[f16] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::BF16(narrow(src, bf16::from_f32))
        }
        (DType::BF16, DType::F16) => {
            let src: &[bf16] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::F16(narrow(src, f16::from_f32))
        }
        (DType::F32, DType::BF16) => {
            let src: &[f32] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::BF16(src.iter().map(|&x| bf16::from_f32(x)).collect())
        }
        (DType::F32, DType::F16) => {
            let src: &[f32] = bytemuck::try_cast_slice(bytes).ok()?;
            FloatVec::F16(src.iter().map(|&x| f16::from_f32(x)).collect())
        }
        _ => return None,
    })
}

impl Source {
    fn dims(&self) -> &[usize] {
        match self {
            Source::Loaded(t) => t.dims(),
            Source::Mapped(m) => &m.shape,
        }
    }

    fn dtype(&self) -> DType {
        match self {
            Source::Loaded(t) => t.dtype(),
            Source::Mapped(m) => m.stored.dtype(),
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
            for (name, src) in MappedFile::open(file)? {
                if !keep(&name) {
                    continue;
                }
                if tensors.insert(name.clone(), src).is_some() {
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
    use super::*;

    /// Deterministic f16 values (not all representable in bf16, so the bf16 path rounds).
    fn f16_tensor(dims: &[usize], seed: f32) -> Tensor {
        let n: usize = dims.iter().product();
        let v: Vec<half::f16> = (0..n)
            .map(|i| half::f16::from_f32(((i as f32 * 0.37 + seed).sin()) * 3.1 + 0.001 * i as f32))
            .collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// A file with prefixed f16 tensors (one large enough to span several release blocks), an
    /// integer tensor and one unrelated key without the prefix.
    fn write_fixture(dir: &Path) -> PathBuf {
        let mut t = HashMap::new();
        t.insert(
            "autoencoder.big.weight".to_string(),
            f16_tensor(&[300, 700], 0.5),
        );
        t.insert("autoencoder.big.bias".to_string(), f16_tensor(&[300], 1.5));
        t.insert("autoencoder.norm.weight".to_string(), f16_tensor(&[7], 2.5));
        t.insert(
            "autoencoder.steps".to_string(),
            Tensor::new(&[3i64, -4, 1 << 40], &Device::Cpu).unwrap(),
        );
        t.insert("ema.big.weight".to_string(), f16_tensor(&[2, 2], 9.0));
        let path = dir.join("ckpt.safetensors");
        candle_core::safetensors::save(&t, &path).unwrap();
        path
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        match t.dtype() {
            DType::F32 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect(),
            DType::BF16 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<half::bf16>()
                .unwrap()
                .iter()
                .map(|x| u32::from(x.to_bits()))
                .collect(),
            DType::F16 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<half::f16>()
                .unwrap()
                .iter()
                .map(|x| u32::from(x.to_bits()))
                .collect(),
            DType::I64 => t
                .flatten_all()
                .unwrap()
                .to_vec1::<i64>()
                .unwrap()
                .iter()
                .map(|&x| x as u32 ^ (x >> 32) as u32)
                .collect(),
            other => panic!("no bit view for {other:?}"),
        }
    }

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

    /// Awkward values for every float conversion: signed zeros, infinities, NaN, f16
    /// subnormals and overflow, ties, then a long ramp (more than one conversion chunk).
    fn awkward_f32() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            1.0,
            -1.5,
            65504.0,
            65520.0,
            1e6,
            -1e-8,
            6e-8,
            3e-5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1.0 + 1.0 / 256.0,
            1.0 + 3.0 / 256.0,
            1.0 + 1.0 / 2048.0,
            std::f32::consts::PI,
        ];
        v.extend((0..2500).map(|i| (i as f32 * 0.731).sin() * 10f32.powi(i % 9 - 4)));
        v
    }

    #[test]
    fn every_float_conversion_matches_candle_to_dtype_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let base = Tensor::new(awkward_f32(), &Device::Cpu).unwrap();
        let n = base.elem_count();
        let floats = [DType::F16, DType::BF16, DType::F32];
        let stored: HashMap<String, Tensor> = floats
            .iter()
            .map(|&d| (format!("{d:?}"), base.to_dtype(d).unwrap()))
            .collect();
        let path = dir.path().join("floats.safetensors");
        candle_core::safetensors::save(&stored, &path).unwrap();
        let ckpt = Checkpoint::load(&path, None, None).unwrap();
        for from in floats {
            let name = format!("{from:?}");
            let file_tensor = &stored[&name];
            for to in floats {
                let got = ckpt.var_builder(to, &Device::Cpu).get(n, &name).unwrap();
                assert_eq!(got.dtype(), to);
                let want = file_tensor.to_dtype(to).unwrap();
                assert_eq!(bits(&got), bits(&want), "{from:?} -> {to:?}");
            }
        }
        // Spot checks of the values themselves: 65520 overflows f16, 1 + 1/256 ties to even in
        // bf16, 1 + 3/256 rounds up.
        let f16_of_f32 = ckpt
            .var_builder(DType::F16, &Device::Cpu)
            .get(n, "F32")
            .unwrap();
        let v = f16_of_f32
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(&v[..6], &[0.0, -0.0, 1.0, -1.5, 65504.0, f32::INFINITY]);
        assert!(v[12].is_nan());
        let bf16_of_f32 = ckpt
            .var_builder(DType::BF16, &Device::Cpu)
            .get(n, "F32")
            .unwrap();
        let v = bf16_of_f32
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(v[14], 1.0);
        assert_eq!(v[15], 1.0 + 4.0 / 256.0);
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
