#!/usr/bin/env python3
"""The final-jump study of issue #14: can the last step of a trailing schedule be made cheaper?

With EzAudio's schedule (zero-terminal-SNR scaled-linear betas, trailing spacing, v-prediction)
every sampler's last step goes from t_min = timesteps[-1] (= 1000/n - 1) straight to sigma 0
and returns the data prediction at t_min. On an exactly solvable control that jump alone costs
0.074 at 25 steps and 0.037 at 50 (`sampler-fast/README.md`, "final-jump floor"). This script
measures what other final-step treatments and spacings give, at an equal number of model calls,
with every model call at an integer timestep 0..999 (what the networks are trained on).

Controls (float64, exact denoisers, no CFG):
  * gaussian: x0 ~ N(0, 0.5^2) per element (the fixture README's control). Every sampler is
    linear in x_T here, so max-rel and RMS-rel are the same number.
  * mixture: x0 ~ 0.5 N(-0.5, 0.15^2) + 0.5 N(0.5, 0.15^2) per element: a non-linear
    denoiser; truth = the probability-flow ODE integrated by scipy (DOP853, rtol 1e-11).

Samplers: DDIM eta 0 (on DDIM's table, alphas_cumprod[999] = 0), DPM-Solver++ 2M and UniPC bh2
(diffusers' formulas and order rules, on the solvers' table with alphas_cumprod[999] = 2^-24).

Run:  python3 engine/tests/studies/final_jump.py            (numpy + scipy; ~1 min)
      python3 engine/tests/studies/final_jump.py --check    (also asserts the fixture README's
                                                            control numbers are reproduced)
"""

import argparse
import json
import math
import sys

import numpy as np
from scipy.integrate import solve_ivp

T = 1000


# ---------------------------------------------------------------- schedule
def schedule():
    b = np.linspace(0.00085**0.5, 0.012**0.5, T, dtype=np.float64) ** 2
    sab = np.sqrt(np.cumprod(1.0 - b))
    s0, sl = sab[0], sab[-1]
    sab = (sab - sl) * (s0 / (s0 - sl))
    ab = sab**2
    betas = np.concatenate([[1.0 - ab[0]], 1.0 - ab[1:] / ab[:-1]])
    ac_ddim = np.cumprod(1.0 - betas)
    ac_ddim[-1] = 0.0
    ac = ac_ddim.copy()
    ac[-1] = 2.0**-24
    return ac_ddim, ac


AC_DDIM, AC = schedule()
SIG = np.sqrt((1.0 - AC) / AC)  # train sigmas (VE)


def trailing(n):
    """diffusers' trailing set_timesteps(n) (numpy float64 arange, round half even)."""
    return [int(t) for t in np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1]


def power_spacing(n, p):
    """n integer timesteps from 999 to 0, t = 999 * u^p, u uniform 1..0 (p = 1: linspace)."""
    u = np.linspace(1.0, 0.0, n)
    ts = [int(t) for t in np.round(999.0 * u**p)]
    # rounding may merge two neighbours near 0 when p > 1: keep them distinct and decreasing
    for i in range(len(ts) - 2, -1, -1):
        if ts[i] <= ts[i + 1]:
            ts[i] = ts[i + 1] + 1
    assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == n, ts
    return ts


# ---------------------------------------------------------------- controls
class Gaussian:
    name = "gaussian"

    def __init__(self, c=0.5):
        self.c = c

    def denoise(self, x, ac):
        """E[x0 | x_t = x] for VP x_t = sqrt(ac) x0 + sqrt(1 - ac) eps."""
        c2 = self.c**2
        return math.sqrt(ac) * c2 / (ac * c2 + 1.0 - ac) * x

    def truth(self, x_t):
        ac = AC[-1]
        return self.c * x_t / math.sqrt(ac * self.c**2 + 1.0 - ac)


class Mixture:
    name = "mixture"

    def __init__(self, mus=(-0.5, 0.5), tau=0.15, w=(0.5, 0.5)):
        self.mus, self.tau, self.w = np.array(mus), tau, np.array(w)

    def denoise_ve(self, y, sigma):
        """E[x0 | y = x0 + sigma eps]."""
        v = self.tau**2 + sigma**2
        logp = np.log(self.w)[:, None] - 0.5 * (y[None, :] - self.mus[:, None]) ** 2 / v
        logp -= logp.max(axis=0, keepdims=True)
        r = np.exp(logp)
        r /= r.sum(axis=0, keepdims=True)
        means = self.mus[:, None] + self.tau**2 / v * (y[None, :] - self.mus[:, None])
        return (r * means).sum(axis=0)

    def denoise(self, x, ac):
        if ac == 0.0:
            return np.full_like(x, float(self.w @ self.mus))
        return self.denoise_ve(x / math.sqrt(ac), math.sqrt((1.0 - ac) / ac))

    def truth(self, x_t, end_sigma=1e-8):
        # dy/d(ln sigma) = y - D(y, sigma), from t = 999 (ac = 2^-24) to end_sigma
        ac = AC[-1]
        y0 = x_t / math.sqrt(ac)
        sol = solve_ivp(
            lambda u, y: y - self.denoise_ve(y, math.exp(u)),
            (math.log(SIG[-1]), math.log(end_sigma)),
            y0,
            method="DOP853",
            rtol=1e-11,
            atol=1e-12,
        )
        assert sol.success, sol.message
        return sol.y[:, -1]


# ---------------------------------------------------------------- samplers
def alpha_sigma(s):
    if s == 0.0:
        return 1.0, 0.0
    a = 1.0 / math.sqrt(s * s + 1.0)
    return a, s * a


def lam(s):
    if s == 0.0:
        return math.inf
    a, sv = alpha_sigma(s)
    return math.log(a) - math.log(sv)


def sigmas_of(ts, final):
    sig = [float(SIG[max(t, 0)]) for t in ts]
    last = {"zero": 0.0, "sigma_min": float(SIG[0])}[final]
    return sig + [last]


def run_ddim(ctrl, x_t, ts, final="zero"):
    """DDIM eta 0, each step to the next timestep of the list; the last to alphas_cumprod 1
    ("zero", set_alpha_to_one) or to alphas_cumprod[0] ("sigma_min", set_alpha_to_one=False)."""
    x = x_t.copy()
    for k, t in enumerate(ts):
        ac = AC_DDIM[max(t, 0)]
        x0 = ctrl.denoise(x, ac)
        eps = (x - math.sqrt(ac) * x0) / math.sqrt(1.0 - ac)
        if k + 1 < len(ts):
            ap = AC_DDIM[max(ts[k + 1], 0)]
        else:
            ap = 1.0 if final == "zero" else AC_DDIM[0]
        x = math.sqrt(ap) * x0 + math.sqrt(1.0 - ap) * eps
    return x


def run_dpm(ctrl, x_t, ts, final="zero"):
    """DPM-Solver++ 2M (midpoint), diffusers' order rule: first order on the first step and
    on the last one when final is "zero" or there are fewer than 15 timesteps."""
    sig = sigmas_of(ts, final)
    L = len(ts)
    x, prev = x_t.copy(), None
    for k in range(L):
        s0, st = sig[k], sig[k + 1]
        a0, v0 = alpha_sigma(s0)
        at, vt = alpha_sigma(st)
        m = ctrl.denoise(x, AC[max(ts[k], 0)])
        last_low = k == L - 1 and (final == "zero" or L < 15)
        order = 1 if (k == 0 or last_low) else 2
        if st == 0.0:
            xn = m
        else:
            h = lam(st) - lam(s0)
            xn = (vt / v0) * x - at * (math.exp(-h) - 1.0) * m
            if order == 2:
                r0 = (lam(s0) - lam(sig[k - 1])) / h
                d1 = (m - prev) / r0
                xn = xn - 0.5 * at * (math.exp(-h) - 1.0) * d1
        prev, x = m, xn
    return x


def _uni_update(sig, s0i, ti, s1i, order, m_cur, m_prev, base, corrector_target=None):
    s0, st = sig[s0i], sig[ti]
    a0, v0 = alpha_sigma(s0)
    at, vt = alpha_sigma(st)
    if st == 0.0:  # to sigma 0: h = inf, the update is the data prediction (bh2: B_h = -1)
        h = math.inf
        h_phi_1 = -1.0
    else:
        h = lam(st) - lam(s0)
        if h == 0.0:
            return base
        h_phi_1 = math.expm1(-h)
    hh = -h
    b_h = h_phi_1
    ratio = vt / v0
    x = ratio * base - at * h_phi_1 * m_cur
    if corrector_target is None:  # predictor
        if order == 2:
            r = (lam(sig[s1i]) - lam(s0)) / h
            d1 = (m_prev - m_cur) / r
            x = x - at * b_h * 0.5 * d1
        return x
    # corrector
    if order == 1:
        rhos = [0.5]
        res = rhos[-1] * (corrector_target - m_cur)
    else:
        r = (lam(sig[s1i]) - lam(s0)) / h
        h_phi_k = h_phi_1 / hh - 1.0
        fact, b = 1, []
        for i in range(1, 3):
            b.append(h_phi_k * fact / b_h)
            fact *= i + 1
            h_phi_k = h_phi_k / hh - 1.0 / fact
        rhos = np.linalg.solve(np.array([[1.0, 1.0], [r, 1.0]]), np.array(b))
        d1 = (m_prev - m_cur) / r
        res = rhos[0] * d1 + rhos[-1] * (corrector_target - m_cur)
    return x - at * b_h * res


def run_unipc(ctrl, x_t, ts, final="zero"):
    """UniPC bh2 order 2 (predict_x0, corrector on every step after the first,
    lower_order_final)."""
    sig = sigmas_of(ts, final)
    L = len(ts)
    x = x_t.copy()
    m_cur = m_prev = last_sample = None
    last_order = 1
    for k in range(L):
        m = ctrl.denoise(x, AC[max(ts[k], 0)])
        if k > 0:
            s1i = k - 2 if (last_order == 2 and k >= 2) else None
            x = _uni_update(
                sig, k - 1, k, s1i, 2 if s1i is not None else 1, m_cur, m_prev, last_sample, m
            )
        m_prev, m_cur = m_cur, m
        order = min(2, L - k, k + 1)
        last_sample, last_order = x, order
        s1i = k - 1 if order == 2 else None
        x = _uni_update(sig, k, k + 1, s1i, order, m_cur, m_prev, x)
    return x


SAMPLERS = {"ddim": run_ddim, "dpm++2m": run_dpm, "unipc": run_unipc}


# ---------------------------------------------------------------- plans at N model calls
def plans(n_calls):
    """(name, timesteps, final sigma) with exactly n_calls model calls."""
    n = n_calls
    tr = trailing(n - 1)
    return [
        ("trailing (default)", trailing(n), "zero"),
        ("(a) trailing, final sigma_min", trailing(n), "sigma_min"),
        ("(b) trailing(N-1) + t=0 (= sigma_min, then one call at t=0)", tr + [0], "zero"),
        ("(b) trailing(N-1) + t_min/2", tr + [tr[-1] // 2], "zero"),
        ("(c) linspace 999..0", power_spacing(n, 1.0), "zero"),
        ("(c) 999*u^1.5", power_spacing(n, 1.5), "zero"),
        ("(c) 999*u^2 (quadratic)", power_spacing(n, 2.0), "zero"),
        ("(c) 999*u^3 (sensitivity)", power_spacing(n, 3.0), "zero"),
    ]


def rel(x, truth):
    return (
        float(np.max(np.abs(x - truth)) / np.max(np.abs(truth))),
        float(np.sqrt(np.mean((x - truth) ** 2)) / np.sqrt(np.mean(truth**2))),
    )


def floor(ctrl, t_last):
    """Error of the last jump alone for the Gaussian: 1 - sqrt(ac) c / std at t_last."""
    ac = AC[max(t_last, 0)]
    return 1.0 - math.sqrt(ac) * ctrl.c / math.sqrt(ac * ctrl.c**2 + 1.0 - ac)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--json", help="write every number to this file")
    args = ap.parse_args()
    rng = np.random.default_rng(20261202)
    x_t = rng.standard_normal(4096)
    out = {}

    # 1. reproduce the fixture README's control (trailing, diffusers' defaults)
    g = Gaussian()
    gt = g.truth(x_t)
    readme = {
        "ddim": {5: 0.406, 10: 0.242, 25: 0.116, 50: 0.0653, 100: 0.0361, 1000: 0.00461},
        "dpm++2m": {5: 0.381, 10: 0.193, 25: 0.0701, 50: 0.0327, 100: 0.0156, 1000: 0.00136},
        "unipc": {5: 0.369, 10: 0.185, 25: 0.0697, 50: 0.0336, 100: 0.0165, 1000: 0.00149},
        "floor": {5: 0.356, 10: 0.185, 25: 0.0737, 50: 0.0366, 100: 0.0182, 1000: 0.00170},
    }
    print("## Reproduction of sampler-fast/README.md's Gaussian control (rel max)\n")
    print("| steps | DDIM | DPM++ 2M | UniPC | floor | README (DDIM/DPM/UniPC/floor) |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for n in [5, 10, 25, 50, 100, 1000]:
        ts = trailing(n)
        row = {k: rel(f(g, x_t, ts), gt)[0] for k, f in SAMPLERS.items()}
        row["floor"] = floor(g, ts[-1])
        ref = [readme[k][n] for k in ["ddim", "dpm++2m", "unipc", "floor"]]
        for k, r in zip(["ddim", "dpm++2m", "unipc", "floor"], ref):
            worst = max(worst, abs(row[k] / r - 1.0))
        print(
            f"| {n} | {row['ddim']:.4g} | {row['dpm++2m']:.4g} | {row['unipc']:.4g} | "
            f"{row['floor']:.4g} | {' / '.join(f'{r:.3g}' for r in ref)} |"
        )
        out.setdefault("reproduction", {})[n] = row
    print(f"\nworst relative deviation from the README's 3-digit values: {worst:.2%}\n")
    if args.check:
        assert worst < 0.01, worst

    # 2. the candidates, at equal model calls
    ctrls = [(g, gt), (Mixture(), None)]
    for ctrl, truth in ctrls:
        if truth is None:
            truth = ctrl.truth(x_t)
            # the ODE integrator against the Gaussian's closed form, as a check of the truth
            gi = Mixture(mus=(0.0,), tau=0.5, w=(1.0,)).truth(x_t)
            print(f"(mixture truth: integrator on the Gaussian is {rel(gi, gt)[0]:.1e} off)\n")
            # the jump alone from t = 0, started exactly on the ODE there
            y0 = ctrl.truth(x_t, end_sigma=float(SIG[0]))
            f0 = rel(ctrl.denoise_ve(y0, float(SIG[0])), truth)
            print(f"mixture: the last jump alone from t = 0 costs {f0[0]:.4f} / {f0[1]:.4f}\n")
            out["mixture_floor_t0"] = f0
        if ctrl.name == "gaussian":
            print(f"gaussian: the last jump alone from t = 0 costs {floor(ctrl, 0):.4f}\n")
        print(f"## {ctrl.name} control: rel max / rel RMS at N model calls\n")
        print("| plan | N | last model t | DDIM | DPM++ 2M | UniPC |")
        print("|---|---|---|---|---|---|")
        for n in [10, 25, 50]:
            seen = set()
            for name, ts, final in plans(n):
                key = (tuple(ts), final)
                if key in seen:
                    continue
                seen.add(key)
                assert len(ts) == n and all(0 <= t <= 999 for t in ts), (name, ts)
                cells = []
                for k, f in SAMPLERS.items():
                    mx, rms = rel(f(ctrl, x_t, ts, final), truth)
                    out.setdefault(ctrl.name, {}).setdefault(str(n), {}).setdefault(name, {})[
                        k
                    ] = [mx, rms]
                    cells.append(f"{mx:.4f} / {rms:.4f}")
                print(f"| {name} | {n} | {ts[-1]} | " + " | ".join(cells) + " |")
        print()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
