//! Random weights at whatever shapes a model asks for: the bench times the real networks
//! without their files, and tests build real-size parts cheaply.

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

/// A `VarBuilder` that makes a random tensor of whatever shape the model asks for.
pub fn random_vb(dtype: DType, device: &Device) -> VarBuilder<'static> {
    VarBuilder::from_backend(Box::new(RandomWeights), dtype, device.clone())
}

/// Uniform weights scaled like PyTorch's default init (`±1/sqrt(fan_in)`) so activations keep
/// a normal range (no denormals, no overflow) through the deep stacks; 1-D tensors named like
/// norm gains or weight-norm magnitudes are drawn around 1.
pub struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = s.dims();
        let gain = (dims.len() <= 1 && name.contains("norm")) || name.ends_with("weight_g");
        let t = if gain {
            Tensor::rand(0.5f32, 1.5, s, dev)?
        } else {
            let fan_in: usize = dims.iter().skip(1).product::<usize>().max(1);
            let a = if dims.len() <= 1 {
                0.02
            } else {
                1.0 / (fan_in as f32).sqrt()
            };
            Tensor::rand(-a, a, s, dev)?
        };
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("random weights: '{name}' requested without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}
