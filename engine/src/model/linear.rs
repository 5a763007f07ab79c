//! The Linear layer of every transformer part, and the rule for which precision a part computes in.
//!
//! On a GPU (or in f32 / f16 anywhere) a part computes in the dtype it was loaded with and uses
//! candle's `Linear`. On a CPU with AVX2 or better, loading in bf16 means "bf16 weights, f32
//! everything else": Linear weights are packed once into [`PackedBf16Weight`] panels, and norms,
//! softmax, RoPE and the residual stream stay f32 (what PyTorch's CPU autocast does). With
//! AVX512-BF16 or AMX the kernel multiplies in bf16 (activations rounded inside it); with AVX2
//! only it widens the weights to f32 in registers (half the memory at f32 speed). candle's own
//! CPU matmul has no bf16 kernel (it widens both operands to f32 on every call), so a model that
//! merely *stores* bf16 is not faster there.
//!
//! In f32 on a CPU, the weights are packed once for our AVX-512 kernel
//! ([`PackedF32Weight`]) when a measurement at load shows it beats the `gemm` crate on this CPU
//! (`f32_gemm::use_packed`); otherwise they are stored transposed for `gemm`.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use candle_nn::VarBuilder;

use crate::error::Result;
use crate::kernels::bf16_gemm::{self, PackedBf16Weight};
use crate::kernels::f32_gemm::{self, PackedF32Weight};
use crate::kernels::fused::{self, with_slice};

/// True when a part loaded through `vb` packs its Linear weights for the CPU bf16 kernel.
pub fn packs_bf16(vb: &VarBuilder) -> bool {
    vb.dtype() == DType::BF16 && vb.device().is_cpu() && bf16_gemm::is_available()
}

/// The dtype activations and non-Linear parameters use for a part loaded through `vb`.
pub fn compute_dtype(vb: &VarBuilder) -> DType {
    if packs_bf16(vb) {
        DType::F32
    } else {
        vb.dtype()
    }
}

/// A parameter that is not a Linear weight (norm, table, conv), in the part's compute dtype.
pub fn param<S: Into<Shape>>(vb: &VarBuilder, shape: S, name: &str) -> Result<Tensor> {
    Ok(vb.get(shape, name)?.to_dtype(compute_dtype(vb))?)
}

/// `nn.Linear` with keys `weight` `(out, in)` and optional `bias` `(out,)`.
#[derive(Debug, Clone)]
pub enum Linear {
    /// candle's matmul in the part's dtype.
    Dense(candle_nn::Linear),
    /// f32 on the CPU: the weight stored transposed, `(in, out)` contiguous. gemm then reads it
    /// as packed panels directly instead of re-packing the `(out, in)` rows on every call (the
    /// packing was 13% of a FLAN-T5 encode, whose matmuls have only 200 rows).
    CpuF32 {
        weight_t: Tensor,
        bias: Option<Tensor>,
    },
    /// Weights packed for one of our CPU kernels; f32 in, f32 out.
    Packed(Arc<PackedLinear>),
}

#[derive(Debug)]
pub struct PackedLinear {
    weight: PackedWeight,
    bias: Option<Vec<f32>>,
}

#[derive(Debug)]
enum PackedWeight {
    /// For the AVX512-BF16 / AMX kernels (a bf16 part).
    Bf16(PackedBf16Weight),
    /// For the AVX-512 f32 kernel (an f32 part, where it measured faster than `gemm`).
    F32(PackedF32Weight),
}

impl PackedWeight {
    fn n(&self) -> usize {
        match self {
            PackedWeight::Bf16(w) => w.n(),
            PackedWeight::F32(w) => w.n(),
        }
    }

    fn k(&self) -> usize {
        match self {
            PackedWeight::Bf16(w) => w.k(),
            PackedWeight::F32(w) => w.k(),
        }
    }
}

fn f32_bias(bias: bool, out_dim: usize, vb: &VarBuilder) -> Result<Option<Vec<f32>>> {
    if !bias {
        return Ok(None);
    }
    let b = vb.get(out_dim, "bias")?.to_dtype(DType::F32)?;
    Ok(Some(b.to_vec1::<f32>()?))
}

pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    if vb.device().is_cpu() && vb.dtype() == DType::F32 && f32_gemm::use_packed() {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let weight = with_slice(&weight, |w: &[f32]| {
            PackedF32Weight::new(w, out_dim, in_dim)
        })?;
        let bias = f32_bias(bias, out_dim, &vb)?;
        return Ok(Linear::Packed(Arc::new(PackedLinear {
            weight: PackedWeight::F32(weight),
            bias,
        })));
    }
    if vb.device().is_cpu() && vb.dtype() == DType::F32 {
        let weight_t = fused::transpose_2d(&vb.get((out_dim, in_dim), "weight")?)?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        return Ok(Linear::CpuF32 { weight_t, bias });
    }
    if !packs_bf16(&vb) {
        let dense = if bias {
            candle_nn::linear(in_dim, out_dim, vb)?
        } else {
            candle_nn::linear_no_bias(in_dim, out_dim, vb)?
        };
        return Ok(Linear::Dense(dense));
    }
    let weight = vb.get((out_dim, in_dim), "weight")?;
    // Packed straight from the tensor's storage (no intermediate Vec of the whole weight).
    let weight = with_slice(&weight, |w: &[half::bf16]| {
        PackedBf16Weight::from_bf16(w, out_dim, in_dim)
    })?;
    let bias = f32_bias(bias, out_dim, &vb)?;
    Ok(Linear::Packed(Arc::new(PackedLinear {
        weight: PackedWeight::Bf16(weight),
        bias,
    })))
}

pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, true, vb)
}

pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, false, vb)
}

impl Linear {
    /// A dense Linear from tensors already in the part's compute dtype (e.g. a kernel-1 conv).
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Self {
        Linear::Dense(candle_nn::Linear::new(weight, bias))
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            // Rank > 2 is flattened to one 2-D matmul: gemm packs the weight once instead of
            // once per batch item, and candle 0.11's CPU matmul is wrong for a transposed lhs
            // against the batch-broadcast weight its `Linear` uses for 3-D input.
            Linear::Dense(dense) if x.rank() > 2 => {
                let mut dims = x.dims().to_vec();
                let k = dims[dims.len() - 1];
                let y = dense.forward(&x.reshape((x.elem_count() / k.max(1), k))?)?;
                if let Some(last) = dims.last_mut() {
                    *last = y.dim(1)?;
                }
                y.reshape(dims)
            }
            Linear::Dense(dense) => dense.forward(x),
            Linear::CpuF32 { weight_t, bias } => {
                let mut dims = x.dims().to_vec();
                let k = weight_t.dim(0)?;
                let y = x
                    .reshape((x.elem_count() / k.max(1), k))?
                    .matmul(weight_t)?;
                let y = match bias {
                    Some(b) => y.broadcast_add(b)?,
                    None => y,
                };
                if let Some(last) = dims.last_mut() {
                    *last = weight_t.dim(1)?;
                }
                y.reshape(dims)
            }
            Linear::Packed(packed) => x.contiguous()?.apply_op1_no_bwd(packed.as_ref()),
        }
    }
}

impl CustomOp1 for PackedLinear {
    fn name(&self) -> &'static str {
        "packed-linear"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let k = self.weight.k();
        let n = self.weight.n();
        let dims = layout.dims();
        if k == 0 || dims.last() != Some(&k) {
            candle_core::bail!("packed linear: input {dims:?}, expected last dim {k}")
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("packed linear: input must be contiguous")
        };
        let m = (end - start) / k;
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        #[allow(clippy::uninit_vec)]
        // SAFETY: `bf16_gemm::matmul*` and `f32_gemm::matmul` store all m*n outputs before returning (their contract,
        // checked by their tests) and nothing reads `out` before; any f32 bit pattern is valid.
        // This skips zeroing up to 32 MiB per call (2% of a bf16 DiT step).
        unsafe {
            out.set_len(m * n)
        };
        let bias = self.bias.as_deref();
        match (&self.weight, storage) {
            (PackedWeight::Bf16(w), CpuStorage::F32(a)) => {
                bf16_gemm::matmul(&a[start..end], m, w, bias, &mut out)
            }
            (PackedWeight::Bf16(w), CpuStorage::BF16(a)) => {
                bf16_gemm::matmul_bf16_input(&a[start..end], m, w, bias, &mut out)
            }
            (PackedWeight::F32(w), CpuStorage::F32(a)) => {
                f32_gemm::matmul(&a[start..end], m, w, bias, &mut out)
            }
            (_, other) => {
                candle_core::bail!("packed linear: unsupported input dtype {:?}", other.dtype())
            }
        }
        let mut out_dims = dims.to_vec();
        if let Some(last) = out_dims.last_mut() {
            *last = n;
        }
        Ok((CpuStorage::F32(out), Shape::from(out_dims)))
    }
}
