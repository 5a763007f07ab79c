#!/usr/bin/env python3
"""PyTorch eager timings at EzAudio's shapes, for the ratios in scripts/gpu-check.sh.

NOT the official EzAudio code (it is not vendored): these are our own modules with the same
shapes and the same kinds of operations as the Rust port (engine/src/model), written from the
port's structure, with random weights:

* DiT guided step: batch 2, 500 frames, 100 text tokens (30 valid), U-shaped stack of
  depth+1 blocks (adaLN-SOLA with the shared time projection, self-attention with per-head
  LayerNorm + RoPE, cross-attention on per-job keys/values, GEGLU MLP, long skips).
* T5 encoder: transformers' T5EncoderModel with the FLAN-T5 configs, when transformers is
  installed (skipped with a note otherwise).
* VAE decode: an Oobleck-shaped decoder (SnakeBeta, transposed convolutions k = 2s with padding
  ceil(s/2), residual units with dilations 1, 3, 9) on 500 latent frames.

One JSON line per measurement: median of --runs after a warm-up, with torch.cuda.synchronize.
"""

import argparse
import json
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SHAPES = {
    # embed, depth, heads, ada rank, context dim (T5 width), T5 (d_model, d_ff, heads)
    "l": dict(d=1024, depth=24, heads=16, rank=32, ctx=1024, t5=(1024, 2816, 16)),
    "xl": dict(d=1152, depth=28, heads=16, rank=36, ctx=2048, t5=(2048, 5120, 32)),
}
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
FRAMES, TOKENS, VALID, BATCH = 500, 100, 30, 2


def rope(t, head_dim, device, dtype):
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim))
    f = torch.outer(torch.arange(t, device=device).float(), inv)
    f = torch.cat([f, f], -1)
    return f.cos().to(dtype), f.sin().to(dtype)


def rotate(x, cos, sin):
    a, b = x.chunk(2, -1)
    return x * cos + torch.cat([-b, a], -1) * sin


class Block(nn.Module):
    def __init__(self, d, heads, rank, skip):
        super().__init__()
        self.h, self.hd = heads, d // heads
        self.skip = nn.Sequential(nn.LayerNorm(2 * d), nn.Linear(2 * d, d)) if skip else None
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.q_norm, self.k_norm = nn.LayerNorm(self.hd), nn.LayerNorm(self.hd)
        self.proj = nn.Linear(d, d)
        self.cq = nn.Linear(d, d, bias=False)
        self.cproj = nn.Linear(d, d)
        self.ck, self.cv = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.norm_ctx = nn.LayerNorm(d)
        self.mlp_in, self.mlp_out = nn.Linear(d, 8 * d), nn.Linear(4 * d, d)
        self.lora = nn.Sequential(nn.Linear(d, rank, bias=False), nn.Linear(rank, 6 * d, bias=False))
        self.table = nn.Parameter(torch.randn(6, d) * 0.1)

    def kv(self, ctx):
        b, l, d = ctx.shape
        c = self.norm_ctx(ctx)
        k = self.k_norm(self.ck(c).view(b, l, self.h, self.hd)).transpose(1, 2)
        return k, self.cv(c).view(b, l, self.h, self.hd).transpose(1, 2)

    def forward(self, x, skip, tt, ta, kv, bias, cos, sin):
        b, t, d = x.shape
        if self.skip is not None:
            x = self.skip(torch.cat([x, skip], -1))
        ada = (ta + self.lora(tt)).view(b, 6, d) + self.table
        sh1, sc1, g1, sh2, sc2, g2 = ada.chunk(6, 1)
        h = self.norm1(x) * (1 + sc1) + sh1
        q, k, v = self.qkv(h).view(b, t, 3, self.h, self.hd).unbind(2)
        q, k = rotate(self.q_norm(q), cos, sin), rotate(self.k_norm(k), cos, sin)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d)) * (1 - g1)
        q = self.q_norm(self.cq(self.norm2(x)).view(b, t, self.h, self.hd)).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=bias)
        x = x + self.cproj(a.transpose(1, 2).reshape(b, t, d))
        h = self.norm3(x) * (1 + sc2) + sh2
        val, gate = self.mlp_in(h).chunk(2, -1)
        return x + self.mlp_out(val * F.gelu(gate)) * (1 - g2)


class Dit(nn.Module):
    def __init__(self, d, depth, heads, rank, ctx, **_):
        super().__init__()
        half = depth // 2
        self.d, self.hd = d, d // heads
        self.patch = nn.Linear(257, d)
        self.time = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.time_ada = nn.Linear(d, 6 * d)
        self.ctx = nn.Sequential(nn.Linear(ctx, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks_in = nn.ModuleList(Block(d, heads, rank, False) for _ in range(half))
        self.mid = Block(d, heads, rank, False)
        self.blocks_out = nn.ModuleList(Block(d, heads, rank, True) for _ in range(half))
        self.final_ada = nn.Linear(d, 2 * d)
        self.final_norm, self.final = nn.LayerNorm(d), nn.Linear(d, 128)

    def prepare(self, context, mask):
        c = self.ctx(context)
        bias = torch.zeros(mask.shape, dtype=c.dtype, device=c.device)
        bias = bias.masked_fill(~mask, torch.finfo(c.dtype).min)[:, None, None, :]
        blocks = [*self.blocks_in, self.mid, *self.blocks_out]
        return [blk.kv(c) for blk in blocks], bias

    def forward(self, x, t, prepared):
        kvs, bias = prepared
        b, _, frames = x.shape
        half = 128
        freqs = torch.exp(-math.log(10000) * torch.arange(half, device=x.device) / half)
        emb = t[:, None].float() * freqs[None]
        tt = F.silu(self.time(torch.cat([emb.cos(), emb.sin()], -1).to(x.dtype)))
        ta = self.time_ada(tt)
        cos, sin = rope(frames, self.hd, x.device, x.dtype)
        h = self.patch(x.transpose(1, 2))
        skips, i = [], 0
        for blk in self.blocks_in:
            h = blk(h, None, tt, ta, kvs[i], bias, cos, sin)
            skips.append(h)
            i += 1
        h = self.mid(h, None, tt, ta, kvs[i], bias, cos, sin)
        i += 1
        for blk in self.blocks_out:
            h = blk(h, skips.pop(), tt, ta, kvs[i], bias, cos, sin)
            i += 1
        sh, sc = self.final_ada(tt)[:, None].chunk(2, -1)
        return self.final(self.final_norm(h) * (1 + sc) + sh).transpose(1, 2)


class Snake(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.zeros(1, c, 1)), nn.Parameter(torch.zeros(1, c, 1))

    def forward(self, x):
        a, b = self.a.exp(), self.b.exp()
        return x + (1.0 / (b + 1e-9)) * torch.sin(x * a).pow(2)


def residual(c, dil):
    return nn.Sequential(Snake(c), nn.Conv1d(c, c, 7, dilation=dil, padding=3 * dil), Snake(c), nn.Conv1d(c, c, 1))


class Res(nn.Module):
    def __init__(self, c, dil):
        super().__init__()
        self.f = residual(c, dil)

    def forward(self, x):
        return x + self.f(x)


def vae_decoder(channels=128, mults=(1, 2, 4, 8), strides=(2, 4, 6, 10), latent=128):
    m = (1,) + mults
    layers = [nn.Conv1d(latent, m[-1] * channels, 7, padding=3)]
    for i in reversed(range(len(mults))):
        cin, cout, s = m[i + 1] * channels, m[i] * channels, strides[i]
        layers += [Snake(cin), nn.ConvTranspose1d(cin, cout, 2 * s, stride=s, padding=math.ceil(s / 2))]
        layers += [Res(cout, d) for d in (1, 3, 9)]
    layers += [Snake(m[0] * channels), nn.Conv1d(m[0] * channels, 1, 7, padding=3, bias=False)]
    return nn.Sequential(*layers)


def timed(fn, runs, warmup):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def emit(part, shape, dtype, times, **extra):
    row = {"kind": "bench", "impl": "torch-shapes", "part": part, "shape": shape, "dtype": dtype,
           "median_s": statistics.median(times), "min_s": min(times), "times_s": times,
           "gpu_mem_peak_mib": torch.cuda.max_memory_allocated() / 2**20, **extra}
    print(json.dumps(row), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="l,xl")
    ap.add_argument("--dtypes", default="f32,f16,bf16")
    ap.add_argument("--parts", default="dit,vae,t5")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    for shape in a.shapes.split(","):
        cfg = SHAPES[shape]
        for name in a.dtypes.split(","):
            dt = DTYPES[name]
            with torch.inference_mode():
                if "dit" in a.parts:
                    torch.cuda.reset_peak_memory_stats()
                    dit = Dit(**cfg).to(dev, dt).eval()
                    x = torch.randn(BATCH, 257, FRAMES, device=dev, dtype=dt)
                    t = torch.full((BATCH,), 500, device=dev)
                    ctx = torch.randn(BATCH, TOKENS, cfg["ctx"], device=dev, dtype=dt)
                    mask = torch.arange(TOKENS, device=dev)[None].expand(BATCH, -1) < VALID
                    prep = dit.prepare(ctx, mask)
                    emit("dit", shape, name, timed(lambda: dit(x, t, prep), a.runs, a.warmup))
                    del dit, prep
                if "vae" in a.parts and shape == "l":  # one VAE for both sizes
                    torch.cuda.reset_peak_memory_stats()
                    vae = vae_decoder().to(dev, dt).eval()
                    z = torch.randn(1, 128, FRAMES, device=dev, dtype=dt)
                    emit("vae", "-", name, timed(lambda: vae(z), a.runs, a.warmup))
                    del vae
                if "t5" in a.parts:
                    try:
                        from transformers import T5Config, T5EncoderModel
                    except ImportError:
                        print(json.dumps({"kind": "part", "name": f"torch-t5-{shape}", "status": "skipped",
                                          "seconds": 0, "why": "transformers is not installed"}))
                        continue
                    dm, dff, heads = cfg["t5"]
                    c = T5Config(d_model=dm, d_ff=dff, num_heads=heads, d_kv=64, num_layers=24,
                                 feed_forward_proj="gated-gelu", vocab_size=32128)
                    torch.cuda.reset_peak_memory_stats()
                    t5 = T5EncoderModel(c).to(dev, dt).eval()
                    ids = torch.randint(0, 32000, (BATCH, TOKENS), device=dev)
                    am = (torch.arange(TOKENS, device=dev)[None].expand(BATCH, -1) < VALID).long()
                    emit("t5", shape, name, timed(lambda: t5(input_ids=ids, attention_mask=am), a.runs, a.warmup))
                    del t5
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
