#!/usr/bin/env python3
"""PyTorch CPU reference timings of the official EzAudio networks, random weights, real shapes.

Compares with `ezaudio bench` (cli/src/bench.rs): same shapes (batch 2 guided DiT step over 500
latent frames with 100 text tokens of which 30 are valid, T5 encode of that prompt pair, VAE decode
of 500 frames of one clip). Prints one JSON line per measurement on stdout; everything else goes to
stderr.

The model code is NOT part of this repository: --ref points at a directory holding
  ezaudio/              files of haidog-yaqub/EzAudio (src/models/*, src/modules/stable_vae/*,
                        ckpts/ezaudio-{l,xl}.yml, ckpts/vae/config.json)
Only the official classes are used: MaskDiT (src/models/conditioners.py, the "UDiT" backbone),
OobleckDecoder (EzAudio's vendored stable-audio-tools copy), transformers' T5EncoderModel.

Parts:
  dit      one forward of MaskDiT, i.e. one classifier-free-guided denoiser step (batch 2),
           including the context projection and each block's cross-attention K/V of the context
           (the official forward recomputes them every step).
  dit_ctx  only that context-dependent part (context_embed, and per block norm_context + to_k +
           to_v on the context), which the Rust port prepares once per job; subtract it from
           `dit` to compare with the Rust per-step time.
  t5       T5EncoderModel encode of input ids (2, 100) with 30 valid tokens.
  vae      OobleckDecoder decode of (1, 128, 500) -> (1, 1, 240000).

dtype bf16 runs under torch.autocast('cpu', dtype=torch.bfloat16) (weights stay f32) unless
--bf16-weights is given (then the module is also cast to bf16).

Environment (see the README next to the reference checkout): the PyPI torch wheel is the CUDA
build; on a CPU-only box it needs stub CUDA libraries on LD_LIBRARY_PATH.
ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA are read by torch itself; they are recorded in each line.
"""
import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import types

FRAMES = 500
TOKENS = 100
VALID_TOKENS = 30
BATCH = 2
TIMESTEP = 500

# flan-t5 encoder configs (config.json of google/flan-t5-large / -xl, written by hand: no hub).
T5_CONFIGS = {
    "l": dict(d_model=1024, d_ff=2816, num_layers=24, num_heads=16, d_kv=64),
    "xl": dict(d_model=2048, d_ff=5120, num_layers=24, num_heads=32, d_kv=64),
}
T5_COMMON = dict(
    vocab_size=32128,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=32,
    relative_attention_max_distance=128,
    layer_norm_epsilon=1e-6,
    dropout_rate=0.1,
    is_encoder_decoder=True,
    tie_word_embeddings=False,
    decoder_start_token_id=0,
    pad_token_id=0,
    eos_token_id=1,
    num_decoder_layers=24,
)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def install_import_stubs(ezaudio_dir):
    """Stub modules the decoder files import but never use on the decode path.

    - torchaudio (autoencoders.py / utils.py: `from torchaudio import transforms as T`, used only
      by resampling helpers),
    - alias_free_torch (Activation1d, used only with antialias_activation=True; the config has it off),
    - ...stable_vae.models.nn is registered as a bare package so that its __init__ (which imports
      loss.py / quantize.py and their training deps) does not run; nn/layers.py is loaded as is,
    - ...stable_vae.models.bottleneck (imports vector_quantize_pytorch; the decoder never uses a
      bottleneck: EzAudio decodes with q_first=True, i.e. `ae.decoder(z)`).
    """
    import torch.nn as nn

    if "torchaudio" not in sys.modules:
        ta = types.ModuleType("torchaudio")
        ta.transforms = types.ModuleType("torchaudio.transforms")
        sys.modules["torchaudio"] = ta
        sys.modules["torchaudio.transforms"] = ta.transforms
    if "alias_free_torch" not in sys.modules:
        aft = types.ModuleType("alias_free_torch")

        class Activation1d(nn.Module):
            def __init__(self, *a, **k):
                raise NotImplementedError("alias_free_torch is stubbed (antialias off in config)")

        aft.Activation1d = Activation1d
        sys.modules["alias_free_torch"] = aft
    base = "src.modules.stable_vae.models"
    models_dir = os.path.join(ezaudio_dir, "src", "modules", "stable_vae", "models")
    for name in ["src", "src.modules", "src.modules.stable_vae", base]:
        if name not in sys.modules:
            m = types.ModuleType(name)
            rel = name.split(".")
            m.__path__ = [os.path.join(ezaudio_dir, *rel)]
            sys.modules[name] = m
    if base + ".nn" not in sys.modules:
        m = types.ModuleType(base + ".nn")
        m.__path__ = [os.path.join(models_dir, "nn")]
        sys.modules[base + ".nn"] = m
    if base + ".bottleneck" not in sys.modules:
        b = types.ModuleType(base + ".bottleneck")

        class Bottleneck(nn.Module):
            pass

        class DiscreteBottleneck(Bottleneck):
            pass

        b.Bottleneck = Bottleneck
        b.DiscreteBottleneck = DiscreteBottleneck
        sys.modules[base + ".bottleneck"] = b


def load_yaml(path):
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


def dit_config(ezaudio_dir, shape):
    path = os.path.join(ezaudio_dir, "ckpts", "ezaudio-%s.yml" % shape)
    return path, load_yaml(path)


def build_dit(args, shape):
    import torch

    ez = os.path.join(args.ref, "ezaudio")
    path, params = dit_config(ez, shape)
    with contextlib.redirect_stdout(sys.stderr):  # the official code prints its modes
        from src.models.conditioners import MaskDiT

        model = MaskDiT(**params["model"])
    model.eval()
    m = params["model"]
    out_ch = m["out_chans"]
    ctx_dim = m["context_dim"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, out_ch, FRAMES, generator=g)
    ctx = torch.randn(BATCH, TOKENS, ctx_dim, generator=g)
    mask = torch.zeros(BATCH, TOKENS, dtype=torch.bool)
    mask[:, :VALID_TOKENS] = True
    t = torch.full((BATCH,), TIMESTEP, dtype=torch.long)
    info = {
        "config": os.path.relpath(path, args.ref),
        "model_name": params.get("model_name"),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "x": list(x.shape),
        "context": list(ctx.shape),
        "valid_tokens": VALID_TOKENS,
        "use_checkpoint": m.get("use_checkpoint"),
    }
    return model, (x, t, ctx, mask), info


def dit_step(model, inputs):
    x, t, ctx, mask = inputs
    # exactly as src/inference.py calls it for a guided step
    out, _ = model(x, t, ctx, context_mask=mask, cls_token=None, gt=None, mae_mask_infer=None)
    return out


def dit_ctx_step(model, inputs):
    _, _, ctx, _ = inputs
    u = model.model
    c = u.context_pe(u.context_embed(ctx))
    outs = []
    for blk in list(u.in_blocks) + [u.mid_block] + list(u.out_blocks):
        cn = blk.norm_context(c)
        outs.append(blk.cross_attn.to_k(cn))
        outs.append(blk.cross_attn.to_v(cn))
    return outs[-1]


def build_t5(args, shape):
    import torch
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(**T5_COMMON, **T5_CONFIGS[shape])
    model = T5EncoderModel(cfg)
    model.eval()
    ids = torch.tensor([(i * 7919) % cfg.vocab_size for i in range(BATCH * TOKENS)],
                       dtype=torch.long).view(BATCH, TOKENS)
    mask = torch.zeros(BATCH, TOKENS, dtype=torch.long)
    mask[:, :VALID_TOKENS] = 1
    info = {
        "config": "flan-t5-%s (hand-written)" % ("large" if shape == "l" else "xl"),
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
        "input_ids": list(ids.shape),
        "valid_tokens": VALID_TOKENS,
    }
    return model, (ids, mask), info


def t5_step(model, inputs):
    ids, mask = inputs
    return model(input_ids=ids, attention_mask=mask).last_hidden_state


def build_vae(args, shape):
    import torch

    ez = os.path.join(args.ref, "ezaudio")
    install_import_stubs(ez)
    from src.modules.stable_vae.models.autoencoders import OobleckDecoder

    path = os.path.join(ez, "ckpts", "vae", "config.json")
    with open(path) as f:
        cfg = json.load(f)
    dec_cfg = dict(cfg["model"]["decoder"]["config"])
    model = OobleckDecoder(**dec_cfg)
    if args.remove_weight_norm:
        from torch.nn.utils import remove_weight_norm

        for mod in model.modules():
            if hasattr(mod, "weight_g"):
                remove_weight_norm(mod)
    model.eval()
    z = torch.randn(1, dec_cfg["latent_dim"], FRAMES, generator=torch.Generator().manual_seed(0))
    info = {
        "config": os.path.relpath(path, args.ref),
        "decoder": dec_cfg,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "z": list(z.shape),
        "weight_norm_removed": bool(args.remove_weight_norm),
    }
    return model, z, info


def vae_step(model, z):
    return model(z)


PARTS = {
    "dit": (build_dit, dit_step),
    "dit_ctx": (build_dit, dit_ctx_step),
    "t5": (build_t5, t5_step),
    "vae": (build_vae, vae_step),
}


def mkldnn_bf16():
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:
        return None


def finite_fraction(out):
    import torch

    out = out.float()
    return float(torch.isfinite(out).float().mean())


def measure(args, part, shape, dtype):
    import torch

    build, step = PARTS[part]
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model, inputs, info = build(args, shape)
    build_s = time.perf_counter() - t0
    if dtype == "bf16":
        if args.bf16_weights:
            model = model.to(torch.bfloat16)
            if part in ("dit", "dit_ctx"):
                x, t, ctx, mask = inputs
                inputs = (x.bfloat16(), t, ctx.bfloat16(), mask)
            elif part == "vae":
                inputs = inputs.bfloat16()
        ctx_mgr = lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    else:
        ctx_mgr = contextlib.nullcontext

    def once():
        with torch.inference_mode(), ctx_mgr():
            return step(model, inputs)

    log("[%s %s %s] built in %.1fs (%s M params); warmup %d, runs %d"
        % (part, shape, dtype, build_s, info.get("params_m"), args.warmup, args.runs))
    out = None
    for _ in range(args.warmup):
        out = once()
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        out = once()
        times.append(time.perf_counter() - t0)
        log("  run %.3fs" % times[-1])
    line = {
        "impl": "pytorch",
        "part": part,
        "shape": shape,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "median_s": statistics.median(times),
        "runs_s": times,
        "min_s": min(times),
        "warmup": args.warmup,
        "build_s": build_s,
        "bf16_mode": ("weights+autocast" if args.bf16_weights else "autocast") if dtype == "bf16" else None,
        "out_shape": list(out.shape),
        "out_finite": finite_fraction(out),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY"),
        "ONEDNN_MAX_CPU_ISA": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "mkldnn_bf16_supported": mkldnn_bf16(),
        "cpu_model": cpu_model(),
        "loadavg": os.getloadavg()[0],
        "info": info,
    }
    print(json.dumps(line), flush=True)
    del model, inputs, out


def split(s, allowed, what):
    vals = [v.strip().lower() for v in s.split(",") if v.strip()]
    for v in vals:
        if v not in allowed:
            raise SystemExit("unknown %s '%s' (expected %s)" % (what, v, ", ".join(allowed)))
    return vals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ref", required=True, help="directory holding ezaudio/ (the fetched official code)")
    ap.add_argument("--part", default="dit", help="comma list of dit, dit_ctx, t5, vae")
    ap.add_argument("--shape", default="l", help="comma list of l, xl (vae has one shape)")
    ap.add_argument("--dtype", default="f32", help="comma list of f32, bf16")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16-weights", action="store_true",
                    help="for bf16 also cast the module (and float inputs) to bf16")
    ap.add_argument("--remove-weight-norm", action="store_true",
                    help="fold the VAE's weight norm first (the official load_vae keeps it)")
    args = ap.parse_args()
    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise SystemExit("runs >= 1, warmup >= 0, threads >= 1")
    parts = split(args.part, list(PARTS), "part")
    shapes = split(args.shape, ["l", "xl"], "shape")
    dtypes = split(args.dtype, ["f32", "bf16"], "dtype")

    args.ref = os.path.abspath(args.ref)
    ez = os.path.join(args.ref, "ezaudio")
    if not os.path.isdir(os.path.join(ez, "src", "models")):
        raise SystemExit("%s does not hold ezaudio/src/models" % args.ref)
    sys.path.insert(0, ez)

    import torch

    torch.set_num_threads(args.threads)
    log("torch %s, capability %s, threads %d" % (
        torch.__version__, torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()))
    for part in parts:
        for shape in (["l"] if part == "vae" else shapes):
            for dtype in dtypes:
                measure(args, part, shape, dtype)


if __name__ == "__main__":
    main()
