//! A shape-only stand-in for a checkpoint, to check the tensors a model asks for against a
//! published layout without reading any weights.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use parking_lot::Mutex;

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
