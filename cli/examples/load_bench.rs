//! Checkpoint loading time and peak memory: the memory-mapped `Checkpoint::load` against the
//! eager path it replaced (`candle_core::safetensors::load` of the whole file into tensors, then
//! `Checkpoint::from_tensors`), on a random fp16 file with the real EzAudio-XL DiT layout.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-perf cargo run --release -p ezaudio-cli --example load_bench -- \
//!     /tmp/dit-xl-f16.safetensors [--runs 3] [--keep]
//! ```
//! Writes the file (about 1.7 GB; deleted at the end unless `--keep`, reused if `--keep` left it),
//! then for each run, dtype (bf16, f32) and loader starts this program again as a child that
//! opens the checkpoint and builds `MaskDit` from it on the CPU, so every peak RSS (`VmHWM`) is
//! that of one load alone. The file stays in the page cache after writing, so every run is a
//! warm-cache load. One JSON object per line. With bf16 on a CPU with AVX512-BF16 the model packs
//! its Linear weights into bf16 panels; otherwise it holds them in the dtype asked for.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::Init;
use ezaudio_cli::bench::peak_rss_mib;
use ezaudio_engine::kernels::bf16_gemm;
use ezaudio_engine::model::dit::{DitConfig, MaskDit};
use ezaudio_engine::weights::RandomWeights;
use ezaudio_engine::weights::{Checkpoint, LayoutProbe};
use serde_json::json;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        return match args.as_slice() {
            [_, loader, dtype, path] => child(loader, dtype, Path::new(path)),
            _ => Err("--child LOADER DTYPE PATH".into()),
        };
    }
    let mut path = None;
    let mut runs = 3;
    let mut keep = false;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().ok_or("--runs needs a value")?.parse()?,
            "--keep" => keep = true,
            _ if a.starts_with("--") => return Err(format!("unknown argument {a}").into()),
            _ => path = Some(PathBuf::from(a)),
        }
    }
    let path = path.ok_or("usage: load_bench PATH.safetensors [--runs N] [--keep]")?;
    if !(keep && path.exists()) {
        write_random_checkpoint(&path)?;
    }
    let exe = std::env::current_exe()?;
    let mut failed = None;
    'runs: for run in 1..=runs {
        for dtype in ["bf16", "f32"] {
            for loader in ["mmap", "eager"] {
                let out = Command::new(&exe)
                    .args(["--child", loader, dtype])
                    .arg(&path)
                    .output()?;
                if !out.status.success() {
                    failed = Some(format!(
                        "{loader} {dtype}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                    break 'runs;
                }
                let line = String::from_utf8_lossy(&out.stdout);
                let mut v: serde_json::Value = serde_json::from_str(line.trim())?;
                v["run"] = json!(run);
                println!("{v}");
            }
        }
    }
    if !keep {
        std::fs::remove_file(&path)?;
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Random fp16 tensors with the names and shapes `MaskDit::new` asks for at the EzAudio-XL
/// config (recorded by a layout probe), drawn like the bench's random weights.
fn write_random_checkpoint(path: &Path) -> Res<()> {
    let t0 = Instant::now();
    let cfg = DitConfig::ezaudio_xl();
    let probe = LayoutProbe::new(BTreeMap::new());
    MaskDit::new(&cfg, probe.var_builder(DType::F32, &Device::Cpu))?;
    let layout = probe.requested();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    for (name, dims) in &layout {
        let t = RandomWeights.get(
            dims.as_slice().into(),
            name,
            Init::Const(0.0),
            DType::F16,
            &Device::Cpu,
        )?;
        tensors.insert(name.clone(), t);
    }
    let params: usize = tensors.values().map(Tensor::elem_count).sum();
    candle_core::safetensors::save(&tensors, path)?;
    println!(
        "{}",
        json!({
            "wrote": path.display().to_string(),
            "tensors": tensors.len(),
            "params": params,
            "bytes": std::fs::metadata(path)?.len(),
            "write_s": t0.elapsed().as_secs_f64(),
        })
    );
    Ok(())
}

/// One load in a fresh process: open the checkpoint, build the DiT, check every tensor was used.
fn child(loader: &str, dtype: &str, path: &Path) -> Res<()> {
    let dt = match dtype {
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        _ => return Err(format!("unknown dtype {dtype}").into()),
    };
    let cfg = DitConfig::ezaudio_xl();
    let start_rss = peak_rss_mib();
    let t0 = Instant::now();
    let ckpt = match loader {
        "mmap" => Checkpoint::load(path, Some("model"), None)?,
        // The loader before memory mapping: every tensor read into memory up front.
        "eager" => {
            Checkpoint::from_tensors(path, candle_core::safetensors::load(path, &Device::Cpu)?)
        }
        _ => return Err(format!("unknown loader {loader}").into()),
    };
    let open_s = t0.elapsed().as_secs_f64();
    let model = MaskDit::new(&cfg, ckpt.var_builder(dt, &Device::Cpu))?;
    ckpt.ensure_all_used(|_| false)?;
    drop(ckpt);
    let load_s = t0.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "loader": loader,
            "dtype": dtype,
            "packed_bf16": dt == DType::BF16 && bf16_gemm::is_available(),
            "load_s": load_s,
            "open_s": open_s,
            "build_s": load_s - open_s,
            "peak_rss_mib": peak_rss_mib(),
            "start_rss_mib": start_rss,
            "compute_dtype": format!("{:?}", model.dtype()),
        })
    );
    Ok(())
}
