//! Tests of the VAE layers: the CPU kernels against candle's ops, and the generic paths.

use super::*;
use candle_core::Device;

#[test]
fn conv_in_pieces_matches_one_piece() -> Result<()> {
    let dev = Device::Cpu;
    for (stride, dilation, k, padding, l_in) in
        [(1, 9, 7, 27, 50), (3, 1, 6, 2, 31), (1, 1, 3, 1, 8)]
    {
        let x = Tensor::randn(0f32, 1.0, (2, 3, l_in), &dev)?;
        let weight = Tensor::randn(0f32, 1.0, (4, 3, k), &dev)?;
        let conv = Conv1d {
            weight,
            bias: None,
            bias_host: Vec::new(),
            padding,
            stride,
            dilation,
            name: String::new(),
        };
        let whole = x.conv1d(&conv.weight, padding, stride, dilation, 1)?;
        for limit in [1, 2 * 3 * k * 5, 2 * 3 * k * 7] {
            let pieces = conv.conv_in_pieces(&x, limit)?;
            let diff = (pieces - &whole)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff < 1e-5,
                "stride {stride} dil {dilation} k {k} limit {limit}: {diff}"
            );
        }
    }
    Ok(())
}

#[test]
fn gemm_conv_matches_candle_conv_with_bias_and_residual() -> Result<()> {
    let dev = Device::Cpu;
    for (stride, dilation, k, padding, l_in) in [
        (1, 9, 7, 27, 50),
        (2, 1, 4, 1, 31),
        (1, 1, 1, 0, 8),
        (3, 2, 3, 0, 40),
    ] {
        let x = Tensor::randn(0f32, 1.0, (2, 3, l_in), &dev)?;
        let weight = Tensor::randn(0f32, 1.0, (5, 3, k), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let want = x
            .conv1d(&weight, padding, stride, dilation, 1)?
            .broadcast_add(&bias.reshape((1, 5, 1))?)?;
        let residual = Tensor::randn(0f32, 1.0, want.shape(), &dev)?;
        let geometry = conv::Geometry {
            stride,
            dilation,
            padding,
        };
        let bias_host: Vec<f32> = bias.to_vec1()?;
        let got = conv::conv1d(&x, &weight, &bias_host, geometry, None)?;
        let plus = conv::conv1d(&x, &weight, &bias_host, geometry, Some(&residual))?;
        let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff_plus = (plus - (want + residual)?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(
            diff < 1e-5 && diff_plus < 1e-5,
            "k {k} dil {dilation}: {diff} {diff_plus}"
        );
    }
    Ok(())
}

#[test]
fn gemm_conv_transpose_matches_the_matmul_formulation() -> Result<()> {
    let dev = Device::Cpu;
    for (stride, t) in [(2, 5), (3, 4), (5, 1), (8, 7)] {
        let weight = Tensor::randn(0f32, 1.0, (3, 4, 2 * stride), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, 4, &dev)?;
        let up = ConvTranspose1d {
            bias_host: bias.to_vec1()?,
            bias: channel_vec(bias.clone())?,
            weight: weight.clone(),
            stride,
            padding: stride.div_ceil(2),
            name: String::new(),
        };
        // f64 takes the generic path (padding 0 + trim); f32 the strided gemm kernel.
        let up64 = ConvTranspose1d {
            weight: weight.to_dtype(DType::F64)?,
            bias: channel_vec(bias.to_dtype(DType::F64)?)?,
            ..up.clone()
        };
        let x = Tensor::randn(0f32, 1.0, (2, 3, t), &dev)?;
        let got = up.forward(&x)?;
        let want = up64.forward(&x.to_dtype(DType::F64)?)?;
        assert_eq!(got.dims(), want.dims(), "stride {stride}");
        let diff = (got.to_dtype(DType::F64)? - want)?
            .abs()?
            .max_all()?
            .to_scalar::<f64>()?;
        assert!(diff < 1e-5, "stride {stride} t {t}: {diff}");
    }
    Ok(())
}

/// The formulation the generic path had before it used candle's padding-0 transposed
/// convolution: one matmul, then input frame i adds taps 0..s to output block i and taps
/// s..2s to block i+1; PyTorch's padding then crops p samples from each end.
fn overlap_add_reference(x: &Tensor, weight: &Tensor, s: usize, p: usize) -> Result<Tensor> {
    let (b, c_in, t) = x.dims3()?;
    let (_, c_out, k) = weight.dims3()?;
    let cols = x
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b * t, c_in))?
        .matmul(&weight.reshape((c_in, c_out * k))?)?
        .reshape((b, t, c_out, k))?;
    let first = cols.narrow(3, 0, s)?.pad_with_zeros(1, 0, 1)?;
    let second = cols.narrow(3, s, s)?.pad_with_zeros(1, 1, 0)?;
    let full = (first + second)?
        .permute((0, 2, 1, 3))?
        .reshape((b, c_out, (t + 1) * s))?;
    Ok(full.narrow(2, p, (t + 1) * s - 2 * p)?)
}

/// Padding 0 + trimming p from each end is PyTorch's `padding = p`: checked against candle's
/// own padded kernel and the overlap-add formulation, for every stride EzAudio's VAEs use
/// (and odd ones, where p = ceil(s/2) makes the output one sample shorter), batch 1 and 2.
#[test]
fn conv_transpose_padding_zero_and_trim_equals_padding_p() -> Result<()> {
    let dev = Device::Cpu;
    for (stride, t, batch) in [
        (2usize, 5usize, 1usize),
        (3, 4, 2),
        (4, 3, 1),
        (5, 1, 2),
        (5, 3, 2),
        (6, 7, 2),
        (10, 6, 1),
    ] {
        let p = stride.div_ceil(2);
        let weight = Tensor::randn(0f64, 1.0, (3, 4, 2 * stride), &dev)?;
        let bias = Tensor::randn(0f64, 1.0, 4, &dev)?;
        let up = ConvTranspose1d {
            bias_host: Vec::new(),
            bias: channel_vec(bias.clone())?,
            weight: weight.clone(),
            stride,
            padding: p,
            name: String::new(),
        };
        let x = Tensor::randn(0f64, 1.0, (batch, 3, t), &dev)?;
        let got = up.forward_generic(&x)?;
        let bias = bias.reshape((1, 4, 1))?;
        let overlap = overlap_add_reference(&x, &weight, stride, p)?.broadcast_add(&bias)?;
        let mut references = vec![("overlap-add", overlap)];
        // candle's padded kernel computes its length as (t-1)s - 2p + ..., which underflows (a
        // panic in debug builds) for a 1-frame input: compared wherever it can run.
        if (t - 1) * stride >= 2 * p {
            let padded = (0..batch)
                .map(|i| {
                    x.narrow(0, i, 1)?
                        .conv_transpose1d(&weight, p, 0, stride, 1, 1)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            let padded = Tensor::cat(&padded, 0)?.broadcast_add(&bias)?;
            references.push(("padded kernel", padded));
        }
        assert_eq!(
            got.dims(),
            [batch, 4, (t - 1) * stride + 2 * stride - 2 * p]
        );
        for (what, want) in references {
            assert_eq!(got.dims(), want.dims(), "stride {stride} vs {what}");
            let diff = (&got - want)?.abs()?.max_all()?.to_scalar::<f64>()?;
            assert!(
                diff < 1e-12,
                "stride {stride} t {t} b {batch} vs {what}: {diff}"
            );
        }
    }
    Ok(())
}

#[test]
fn tiled_residual_unit_matches_the_op_by_op_chain() -> Result<()> {
    let dev = Device::Cpu;
    for (channels, dilation, len) in [
        (3, 9, 700),
        (4, 1, 37),
        (2, 3, 5),
        (64, 9, 3000),
        (64, 3, 10_000),
        (300, 100, 900),
    ] {
        let unit = ResidualUnit::new(
            channels,
            dilation,
            true,
            crate::weights::random_vb(DType::F32, &dev),
        )?;
        let x = Tensor::randn(0f32, 1.0, (2, channels, len), &dev)?;
        let tiled = unit.forward(&x)?;
        assert!(unit.tiled(&x).is_some());
        let y = unit.conv1.forward(&unit.act1.forward(&x)?)?;
        let chain = (unit.conv2.forward(&unit.act2.forward(&y)?)? + &x)?;
        let scale = chain.abs()?.max_all()?.to_scalar::<f32>()?;
        let diff = (tiled - chain)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            diff <= 1e-5 * scale.max(1.0),
            "C {channels} dil {dilation} L {len}: {diff}"
        );
    }
    Ok(())
}
