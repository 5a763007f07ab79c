//! The Oobleck building blocks: folded weight-norm convolutions, SnakeBeta, residual units and the
//! encoder/decoder blocks, laid out like the PyTorch `nn.Sequential` trees.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use candle_nn::VarBuilder;

use super::config::{OobleckDecoderConfig, OobleckEncoderConfig};
use crate::error::Result;
use crate::kernels::{conv, fused};

/// Legacy `weight_norm(dim=0)`: `w = g * v / ||v||`, the norm over every dim but 0. Computed once,
/// in f32, then cast. Checkpoints that already hold a plain `weight` are used as they are.
fn weight_norm_weight(vb: &VarBuilder, shape: (usize, usize, usize)) -> Result<Tensor> {
    if !vb.contains_tensor("weight_v") && vb.contains_tensor("weight") {
        return Ok(vb.get(shape, "weight")?);
    }
    let vb32 = vb.to_dtype(DType::F32);
    let v = vb32.get(shape, "weight_v")?;
    let g = vb32.get((shape.0, 1, 1), "weight_g")?;
    let norm = v.sqr()?.sum_keepdim(2)?.sum_keepdim(1)?.sqrt()?;
    let w = v.broadcast_mul(&g.div(&norm)?)?;
    Ok(w.to_dtype(vb.dtype())?)
}

/// Per-channel vector `(C,)` as `(1, C, 1)` so it broadcasts over `(B, C, T)`.
fn channel_vec(t: Tensor) -> Result<Tensor> {
    let c = t.dim(0)?;
    Ok(t.reshape((1, c, 1))?)
}

/// SnakeBeta with log-scale parameters: `y = x + 1/(exp(beta) + 1e-9) * sin(exp(alpha) x)^2`.
#[derive(Debug, Clone)]
pub(super) struct SnakeBeta {
    /// `exp(alpha)`, `(1, C, 1)`.
    alpha: Tensor,
    /// `1 / (exp(beta) + 1e-9)`, `(1, C, 1)`.
    inv_beta: Tensor,
    /// The same two vectors on the host, for the fused CPU float32 path.
    host: Option<(Vec<f32>, Vec<f32>)>,
}

impl SnakeBeta {
    fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let dtype = vb.dtype();
        let vb32 = vb.to_dtype(DType::F32);
        let alpha = vb32.get(channels, "alpha")?.exp()?;
        let inv_beta = (vb32.get(channels, "beta")?.exp()? + 1e-9)?.recip()?;
        let host = if vb.device().is_cpu() && dtype == DType::F32 {
            Some((alpha.to_vec1()?, inv_beta.to_vec1()?))
        } else {
            None
        };
        Ok(Self {
            alpha: channel_vec(alpha.to_dtype(dtype)?)?,
            inv_beta: channel_vec(inv_beta.to_dtype(dtype)?)?,
            host,
        })
    }
}

impl Module for SnakeBeta {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some((alpha, inv_beta)) = &self.host {
            if x.dtype() == DType::F32 && x.is_contiguous() && x.rank() == 3 {
                return x.apply_op1_no_bwd(&SnakeCpu { alpha, inv_beta });
            }
        }
        let s = x.broadcast_mul(&self.alpha)?.sin()?.sqr()?;
        x + s.broadcast_mul(&self.inv_beta)?
    }
}

/// SnakeBeta as one multi-threaded pass on CPU (candle's element-wise ops would take five
/// single-threaded passes, each allocating an activation-sized tensor). Same f32 operations in the
/// same order as the tensor version.
struct SnakeCpu<'a> {
    alpha: &'a [f32],
    inv_beta: &'a [f32],
}

impl CustomOp1 for SnakeCpu<'_> {
    fn name(&self) -> &'static str {
        "snake-beta"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("snake-beta: expects contiguous f32 input");
        };
        let (_, c, t) = layout.shape().dims3()?;
        if c != self.alpha.len() {
            candle_core::bail!("snake-beta: {} channels, input has {c}", self.alpha.len());
        }
        let x = &data[start..end];
        let mut y = vec![0f32; x.len()];
        let rows = x.len() / t.max(1);
        let threads = candle_core::utils::get_num_threads().clamp(1, rows.max(1));
        let rows_per = rows.div_ceil(threads);
        std::thread::scope(|scope| {
            for (part, (ys, xs)) in y
                .chunks_mut(rows_per * t)
                .zip(x.chunks(rows_per * t))
                .enumerate()
            {
                scope.spawn(move || {
                    for (r, (yr, xr)) in ys.chunks_mut(t).zip(xs.chunks(t)).enumerate() {
                        let ch = (part * rows_per + r) % c;
                        fused::snake_row(yr, xr, self.alpha[ch], self.inv_beta[ch]);
                    }
                });
            }
        });
        Ok((CpuStorage::F32(y), layout.shape().clone()))
    }
}

/// `get_activation("snake" | "elu")`.
#[derive(Debug, Clone)]
pub(super) enum Activation {
    Snake(SnakeBeta),
    Elu,
}

impl Activation {
    fn new(use_snake: bool, channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(if use_snake {
            Self::Snake(SnakeBeta::new(channels, vb)?)
        } else {
            Self::Elu
        })
    }
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Snake(s) => s.forward(x),
            Self::Elu => x.elu(1.0),
        }
    }
}

/// `WNConv1d` with its weight norm folded.
#[derive(Debug, Clone)]
pub(super) struct Conv1d {
    weight: Tensor,
    bias: Option<Tensor>,
    /// `bias` on the host for the gemm kernel (empty: no bias).
    bias_host: Vec<f32>,
    padding: usize,
    stride: usize,
    dilation: usize,
    name: String,
}

struct ConvSpec {
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    bias: bool,
}

impl ConvSpec {
    fn new(c_in: usize, c_out: usize, kernel: usize) -> Self {
        Self {
            c_in,
            c_out,
            kernel,
            stride: 1,
            padding: 0,
            dilation: 1,
            bias: true,
        }
    }
}

impl Conv1d {
    fn new(s: ConvSpec, vb: VarBuilder) -> Result<Self> {
        let weight = weight_norm_weight(&vb, (s.c_out, s.c_in, s.kernel))?;
        let bias = if s.bias {
            Some(channel_vec(vb.get(s.c_out, "bias")?)?)
        } else {
            None
        };
        let bias_host = match &bias {
            Some(b) => b.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?,
            None => Vec::new(),
        };
        Ok(Self {
            weight,
            bias,
            bias_host,
            padding: s.padding,
            stride: s.stride,
            dilation: s.dilation,
            name: vb.prefix(),
        })
    }
}

/// Largest im2col buffer (elements) a CPU convolution may build at once. candle's CPU conv1d
/// unrolls the whole input (`B x L_out x C_in x k`): 0.9 GB for the last decoder stage of a
/// 10 s clip. Above this, the time axis is processed in pieces (exactly the same sums).
const CPU_IM2COL_LIMIT: usize = 1 << 25;

impl Conv1d {
    fn conv_in_pieces(&self, x: &Tensor, limit: usize) -> candle_core::Result<Tensor> {
        let (b, c_in, l_in) = x.dims3()?;
        let k = self.weight.dim(2)?;
        let span = self.dilation * (k - 1) + 1;
        let padded = l_in + 2 * self.padding;
        if padded < span {
            candle_core::bail!(
                "conv1d: input of {l_in} samples is shorter than the kernel span {span}"
            );
        }
        let l_out = (padded - span) / self.stride + 1;
        let piece = (limit / (b * c_in * k)).max(1);
        let xp = x.pad_with_zeros(2, self.padding, self.padding)?;
        let parts = (0..l_out)
            .step_by(piece)
            .map(|o0| {
                let n = piece.min(l_out - o0);
                let input = xp.narrow(2, o0 * self.stride, (n - 1) * self.stride + span)?;
                input.conv1d(&self.weight, 0, self.stride, self.dilation, 1)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Tensor::cat(&parts, 2)
    }
}

impl Conv1d {
    fn geometry(&self) -> conv::Geometry {
        conv::Geometry {
            stride: self.stride,
            dilation: self.dilation,
            padding: self.padding,
        }
    }

    /// `self.forward(x) + residual`, the residual added inside the convolution when it can be.
    fn forward_plus(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
        if conv::applies(x, &self.weight) && residual.dtype() == DType::F32 {
            return conv::conv1d(
                x,
                &self.weight,
                &self.bias_host,
                self.geometry(),
                Some(residual),
            );
        }
        self.forward(x)? + residual
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if conv::applies(x, &self.weight) {
            return conv::conv1d(x, &self.weight, &self.bias_host, self.geometry(), None);
        }
        let (b, c_in, l_in) = x.dims3()?;
        let y = if x.device().is_cpu()
            && b * c_in * self.weight.dim(2)? * l_in / self.stride > CPU_IM2COL_LIMIT
        {
            self.conv_in_pieces(x, CPU_IM2COL_LIMIT)?
        } else {
            x.conv1d(&self.weight, self.padding, self.stride, self.dilation, 1)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `WNConvTranspose1d(k = 2s, stride s, padding ceil(s/2))`. Its weight is `(in, out, k)` and the
/// weight norm's dim 0 is the input channel.
#[derive(Debug, Clone)]
struct ConvTranspose1d {
    weight: Tensor,
    bias: Tensor,
    bias_host: Vec<f32>,
    stride: usize,
    padding: usize,
    name: String,
}

impl ConvTranspose1d {
    fn new(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        // Contiguous: candle's matmul + col2im path takes no strided kernel.
        let weight = weight_norm_weight(&vb, (c_in, c_out, 2 * stride))?.contiguous()?;
        let bias = channel_vec(vb.get(c_out, "bias")?)?;
        let bias_host = bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Ok(Self {
            weight,
            bias,
            bias_host,
            stride,
            padding: stride.div_ceil(2),
            name: vb.prefix(),
        })
    }
}

impl ConvTranspose1d {
    /// The device-generic path (GPUs, and dtypes the CPU kernel does not take).
    ///
    /// PyTorch's `padding = p` only crops p samples from each end of the padding-0 result
    /// ((T-1)s + k samples, k = 2s): so this convolves with padding 0, which candle runs as one
    /// matmul + col2im on every backend (with padding it falls back to a direct per-output loop,
    /// the slow kernel on CUDA), and narrows the ends away. Batch items go one at a time: candle
    /// 0.11's padding-0 path folds the batch wrongly on the CPU for batch > 1 (a transposed lhs
    /// against a broadcast rhs), and the decoder runs one clip anyway.
    fn forward_generic(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, _, t) = x.dims3()?;
        let k = self.weight.dim(2)?;
        let (s, p) = (self.stride, self.padding);
        let full = (t.max(1) - 1) * s + k;
        if t == 0 || full < 2 * p {
            candle_core::bail!("conv_transpose1d: input of {t} frames is too short")
        }
        let len = full - 2 * p;
        let one = |x: &Tensor| -> candle_core::Result<Tensor> {
            x.contiguous()?
                .conv_transpose1d(&self.weight, 0, 0, s, 1, 1)?
                .narrow(2, p, len)
        };
        let y = if b == 1 {
            one(x)?
        } else {
            let items = (0..b)
                .map(|i| one(&x.narrow(0, i, 1)?))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&items, 0)?
        };
        y.broadcast_add(&self.bias)
    }
}

impl Module for ConvTranspose1d {
    /// f32 on the CPU: our strided gemm kernel (`kernels::conv`); anything else:
    /// [`ConvTranspose1d::forward_generic`]. Output length (T-1)s - 2p + 2s (s*T for even s,
    /// s*T - 1 for odd s), as PyTorch's.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if conv::applies(x, &self.weight) {
            let (s, p) = (self.stride, self.padding);
            return conv::conv_transpose1d(x, &self.weight, &self.bias_host, s, p);
        }
        self.forward_generic(x)
    }
}

/// `x + Conv1x1(act(Conv_k7_dil_d(act(x))))`.
#[derive(Debug, Clone)]
struct ResidualUnit {
    act1: Activation,
    conv1: Conv1d,
    act2: Activation,
    conv2: Conv1d,
}

impl ResidualUnit {
    fn new(channels: usize, dilation: usize, use_snake: bool, vb: VarBuilder) -> Result<Self> {
        let vb = vb.pp("layers");
        let k7 = ConvSpec {
            dilation,
            padding: 3 * dilation,
            ..ConvSpec::new(channels, channels, 7)
        };
        Ok(Self {
            act1: Activation::new(use_snake, channels, vb.pp(0))?,
            conv1: Conv1d::new(k7, vb.pp(1))?,
            act2: Activation::new(use_snake, channels, vb.pp(2))?,
            conv2: Conv1d::new(ConvSpec::new(channels, channels, 1), vb.pp(3))?,
        })
    }
}

impl ResidualUnit {
    /// The fused, tiled CPU kernel's view of this unit, when it applies (f32 on the CPU, Snake
    /// activations, "same"-padded stride-1 conv with bias).
    fn tiled(&self, x: &Tensor) -> Option<conv::ResidualUnit<'_>> {
        let (Activation::Snake(s1), Activation::Snake(s2)) = (&self.act1, &self.act2) else {
            return None;
        };
        let ((alpha1, inv_beta1), (alpha2, inv_beta2)) = (s1.host.as_ref()?, s2.host.as_ref()?);
        let (c1, c2) = (&self.conv1, &self.conv2);
        let k = c1.weight.dim(2).ok()?;
        let same = c1.stride == 1 && c1.padding == (k - 1) / 2 * c1.dilation;
        let f32_cpu = conv::applies(x, &c1.weight) && conv::applies(x, &c2.weight);
        let biased = !c1.bias_host.is_empty() && !c2.bias_host.is_empty();
        (same && f32_cpu && biased && x.rank() == 3).then_some(conv::ResidualUnit {
            snake1: conv::Snake {
                alpha: alpha1,
                inv_beta: inv_beta1,
            },
            conv1: &c1.weight,
            bias1: &c1.bias_host,
            dilation: c1.dilation,
            snake2: conv::Snake {
                alpha: alpha2,
                inv_beta: inv_beta2,
            },
            conv2: &c2.weight,
            bias2: &c2.bias_host,
        })
    }
}

impl Module for ResidualUnit {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(unit) = self.tiled(x) {
            return conv::residual_unit(x, &unit);
        }
        let y = self.conv1.forward(&self.act1.forward(x)?)?;
        self.conv2.forward_plus(&self.act2.forward(&y)?, x)
    }
}

const DILATIONS: [usize; 3] = [1, 3, 9];

fn residual_units(
    channels: usize,
    use_snake: bool,
    vb: &VarBuilder,
    first: usize,
) -> Result<Vec<ResidualUnit>> {
    DILATIONS
        .iter()
        .enumerate()
        .map(|(i, &d)| ResidualUnit::new(channels, d, use_snake, vb.pp(first + i)))
        .collect()
}

/// Residual units at the input width, then `act` and a strided `Conv1d(k = 2s, pad ceil(s/2))`.
#[derive(Debug, Clone)]
pub(super) struct EncoderBlock {
    units: Vec<ResidualUnit>,
    act: Activation,
    down: Conv1d,
}

impl EncoderBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        use_snake: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("layers");
        let spec = ConvSpec {
            stride,
            padding: stride.div_ceil(2),
            ..ConvSpec::new(c_in, c_out, 2 * stride)
        };
        Ok(Self {
            units: residual_units(c_in, use_snake, &vb, 0)?,
            act: Activation::new(use_snake, c_in, vb.pp(3))?,
            down: Conv1d::new(spec, vb.pp(4))?,
        })
    }
}

impl Module for EncoderBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for u in &self.units {
            x = u.forward(&x)?;
        }
        self.down.forward(&self.act.forward(&x)?)
    }
}

/// `act`, a transposed-conv upsampler, then residual units at the output width.
#[derive(Debug, Clone)]
pub(super) struct DecoderBlock {
    act: Activation,
    up: ConvTranspose1d,
    units: Vec<ResidualUnit>,
}

impl DecoderBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        use_snake: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let vb = vb.pp("layers");
        Ok(Self {
            act: Activation::new(use_snake, c_in, vb.pp(0))?,
            up: ConvTranspose1d::new(c_in, c_out, stride, vb.pp(1))?,
            units: residual_units(c_out, use_snake, &vb, 2)?,
        })
    }
}

impl Module for DecoderBlock {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.up.forward(&self.act.forward(x)?)?;
        for u in &self.units {
            x = u.forward(&x)?;
        }
        Ok(x)
    }
}

/// One entry of an `nn.Sequential` (`encoder.layers` / `decoder.layers`).
#[derive(Debug, Clone)]
pub(super) enum Layer {
    Conv(Conv1d),
    Encoder(EncoderBlock),
    Decoder(DecoderBlock),
    Act(Activation),
    Tanh,
    Identity,
}

impl Module for Layer {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Conv(c) => c.forward(x),
            Self::Encoder(b) => b.forward(x),
            Self::Decoder(b) => b.forward(x),
            Self::Act(a) => a.forward(x),
            Self::Tanh => x.tanh(),
            Self::Identity => Ok(x.clone()),
        }
    }
}

/// Runs `layers` in order; with `trace`, keeps every layer's output (the fixtures' debug tensors).
pub(super) fn run_layers(
    layers: &[Layer],
    x: &Tensor,
    mut trace: Option<&mut Vec<Tensor>>,
) -> Result<Tensor> {
    let mut x = x.clone();
    for layer in layers {
        x = layer.forward(&x)?;
        if let Some(t) = trace.as_deref_mut() {
            t.push(x.clone());
        }
    }
    Ok(x)
}

pub(super) fn oobleck_encoder(c: &OobleckEncoderConfig, vb: VarBuilder) -> Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let mults: Vec<usize> = std::iter::once(1)
        .chain(c.c_mults.iter().copied())
        .collect();
    let width = |i: usize| mults[i] * c.channels;
    let mut layers = vec![Layer::Conv(Conv1d::new(
        ConvSpec {
            padding: 3,
            ..ConvSpec::new(c.in_channels, width(0), 7)
        },
        vb.pp(0),
    )?)];
    for i in 0..mults.len() - 1 {
        let block = EncoderBlock::new(
            width(i),
            width(i + 1),
            c.strides[i],
            c.use_snake,
            vb.pp(i + 1),
        )?;
        layers.push(Layer::Encoder(block));
    }
    let (last, n) = (width(mults.len() - 1), layers.len());
    layers.push(Layer::Act(Activation::new(c.use_snake, last, vb.pp(n))?));
    let out = ConvSpec {
        padding: 1,
        ..ConvSpec::new(last, c.latent_dim, 3)
    };
    layers.push(Layer::Conv(Conv1d::new(out, vb.pp(n + 1))?));
    Ok(layers)
}

pub(super) fn oobleck_decoder(c: &OobleckDecoderConfig, vb: VarBuilder) -> Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let mults: Vec<usize> = std::iter::once(1)
        .chain(c.c_mults.iter().copied())
        .collect();
    let width = |i: usize| mults[i] * c.channels;
    let depth = mults.len();
    let conv_in = ConvSpec {
        padding: 3,
        ..ConvSpec::new(c.latent_dim, width(depth - 1), 7)
    };
    let mut layers = vec![Layer::Conv(Conv1d::new(conv_in, vb.pp(0))?)];
    // Blocks run from the widest level down, in reversed stride order.
    for i in (1..depth).rev() {
        let vb_i = vb.pp(layers.len());
        let block = DecoderBlock::new(width(i), width(i - 1), c.strides[i - 1], c.use_snake, vb_i)?;
        layers.push(Layer::Decoder(block));
    }
    let n = layers.len();
    layers.push(Layer::Act(Activation::new(
        c.use_snake,
        width(0),
        vb.pp(n),
    )?));
    let out = ConvSpec {
        padding: 3,
        bias: false,
        ..ConvSpec::new(width(0), c.out_channels, 7)
    };
    layers.push(Layer::Conv(Conv1d::new(out, vb.pp(n + 1))?));
    layers.push(if c.final_tanh {
        Layer::Tanh
    } else {
        Layer::Identity
    });
    Ok(layers)
}

impl Layer {
    /// Appends `(module path, folded weight)` for every convolution inside this layer.
    pub(super) fn collect_weights(&self, out: &mut Vec<(String, Tensor)>) {
        let conv = |c: &Conv1d, out: &mut Vec<(String, Tensor)>| {
            out.push((c.name.clone(), c.weight.clone()))
        };
        let units = |us: &[ResidualUnit], out: &mut Vec<(String, Tensor)>| {
            for u in us {
                conv(&u.conv1, out);
                conv(&u.conv2, out);
            }
        };
        match self {
            Layer::Conv(c) => conv(c, out),
            Layer::Encoder(b) => {
                units(&b.units, out);
                conv(&b.down, out);
            }
            Layer::Decoder(b) => {
                out.push((b.up.name.clone(), b.up.weight.clone()));
                units(&b.units, out);
            }
            Layer::Act(_) | Layer::Tanh | Layer::Identity => {}
        }
    }
}

#[cfg(test)]
mod tests;
