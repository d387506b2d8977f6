#!/usr/bin/env python3
"""Accuracy of 8-bit P·V variants for compute="int8", emulated on the CPU with numpy (no GPU).

compute="int8" runs Q·Kᵀ on int8 tensor cores (q in two int8 parts, docs/design.md §1) and P·V in
16-bit. This script asks whether P·V could run on 8-bit tensor cores too without breaking the
contract's bound (<= 1e-2 per sequence and head against fp64), before anyone builds the kernel.
It emulates, per 128-key tile of the online softmax, what such a kernel would compute:

  bf16      P rounded to bf16, V's int8 values exact: the shipped recipe (the baseline).
  u8_tile   P as uint8 with one scale per (row, tile): the row's largest weight in the tile maps to
            255 (that scale is exp2(tile max - running max), which the softmax has already); the
            u8 x s8 products summed exactly (int32), scaled by s / 255 in fp32 and accumulated in
            fp32 across tiles (two-level accumulation).
  u8_global P as uint8 with the fixed scale 1/255 of the running max (the retired recipe's P).
  e4m3      SageAttention 2's form on FP8 tensor cores: P in e4m3 with a per-(row, tile) scale
            (largest weight -> 448), and V's int8 values rounded to e4m3 (FP8 MMAs take no int8).

The row sums l are fp32 sums of the unrounded p (as the kernels keep them). Q·Kᵀ is the shipped
int8 recipe in every variant (two-part q, exact integer dot products), so the differences are P·V's.

Workloads follow the accuracy grid of the tests (tests/common/int8_accuracy.h), redrawn here with
numpy (same construction, not the same bytes): near-uniform ("flat", logits of std 0.05), "randn"
(std 1), "peaked" (4 planted keys with logits ln(N) + 2..5), "outliers" (4 K channels 10-50x
larger, logits of std 1.5); K x 3, V x 0.05 with one token in 8 of magnitude ~1e-3; one query at
the end of a sequence of N keys, N in {1k, 16k, 64k, 128k}; K and V quantized per channel or per
token; D 128. Error: ||out - ref|| / ||ref|| against fp64 attention over the dequantized cache,
worst over the heads of the workload.

Usage: python3 bench/pv8_accuracy.py [--heads 4] [--seed 0] [--out bench/results/pv8_accuracy.json]
"""
import argparse
import json
import math
import sys
import time

import numpy as np

D = 128
TILE = 128
LOG2E = 1.4426950408889634
KV_LENS = (1024, 16384, 65536, 131072)
WORKLOADS = ("flat", "randn", "peaked", "outliers")
VARIANTS = ("bf16", "u8_tile", "u8_global", "e4m3")
BOUND = 1e-2


def to_bf16(x):
    """Round float32 values to bf16 (nearest even), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def to_e4m3(x):
    """Round to float8 e4m3 (finite, max 448, subnormals from 2^-9), nearest even, as float64."""
    x = np.asarray(x, dtype=np.float64)
    a = np.minimum(np.abs(x), 448.0)
    e = np.floor(np.log2(np.maximum(a, 2.0 ** -9)))
    e = np.maximum(e, -6.0)          # below 2^-6 the spacing stays 2^-9 (subnormals)
    step = 2.0 ** (e - 3)            # 3 mantissa bits
    return np.sign(x) * np.minimum(np.round(a / step) * step, 448.0)


def quantize(x, per_token):
    """int8 values and scales: per channel ([D] scales, amax over tokens) or per token ([N])."""
    amax = np.abs(x).max(axis=1 if per_token else 0)
    scale = np.maximum(amax / 127.0, 1e-8)
    q8 = np.clip(np.rint(x / (scale[:, None] if per_token else scale[None, :])), -127, 127)
    return q8, scale


def draw(workload, n, rng):
    """q [D] (bf16 values), K and V [n, D] (floats before quantization), softmax scale."""
    k = to_bf16(rng.standard_normal((n, D)).astype(np.float32)).astype(np.float64) * 3.0
    v = to_bf16(rng.standard_normal((n, D)).astype(np.float32)).astype(np.float64) * 0.05
    small = rng.random(n) < 1.0 / 8.0
    v[small] = rng.standard_normal((int(small.sum()), D)) * 3e-4
    q = rng.standard_normal(D)
    sm = 1.0 / math.sqrt(D)
    if workload == "outliers":
        ch = rng.choice(D, 4, replace=False)
        for c, mag in zip(ch, (10.0, 20.0, 35.0, 50.0)):
            sign = 1.0 if rng.random() < 0.5 else -1.0
            k[:, c] = 3.0 * (sign * mag + 0.5 * mag * rng.standard_normal(n))
    std = {"flat": 0.05, "randn": 1.0, "outliers": 1.5}.get(workload)
    if std is not None:
        logits = (k @ q) * sm
        q = q * (std / max(np.std(logits), 1e-30))
    q = to_bf16(q.astype(np.float32)).astype(np.float64)
    if workload == "peaked":
        bulk = (k @ q) * sm
        q = q / max(np.std(bulk), 1e-30)  # bulk logits ~ N(0, 1)
        q = to_bf16(q.astype(np.float32)).astype(np.float64)
        qn = q / np.linalg.norm(q)
        for i, extra in enumerate((2.0, 3.0, 4.0, 5.0)):
            j = (i + 1) * n // 5
            target = math.log(n) + extra
            k[j] = qn * (target / (sm * np.linalg.norm(q)))
    return q, k, v, sm


def scores_int8(q, k8, k_scale, per_token, sm):
    """The shipped int8 Q·Kᵀ: q' = q * k_scale (per channel), two int8 parts, exact integer sums;
    returns the scores in log2 units as float32 (the kernels' fp32 scores)."""
    qp = q * (1.0 if per_token else k_scale)
    amax = np.abs(qp).max()
    s_q = amax / 127.0 if amax > 0 else 1.0
    hi = np.clip(np.rint(qp / s_q), -127, 127)
    lo = np.clip(np.rint((qp - hi * s_q) * (128.0 / s_q)), -127, 127)
    s_int = k8 @ hi + (k8 @ lo) / 128.0          # exact: integers and multiples of 1/128
    s = s_q * s_int * (k_scale if per_token else 1.0)
    return (s * sm * LOG2E).astype(np.float32)


def attend(t, v8, v_scale, per_token, variant):
    """Online softmax over 128-key tiles with the variant's P·V; t: [n] fp32 log2 scores."""
    n = t.shape[0]
    tiles = (n + TILE - 1) // TILE
    pad = tiles * TILE - n
    tt = np.concatenate([t, np.full(pad, -np.inf, np.float32)]).reshape(tiles, TILE).astype(np.float64)
    vv = np.concatenate([v8, np.zeros((pad, D))]).reshape(tiles, TILE, D)
    vs = np.concatenate([v_scale, np.zeros(pad)]).reshape(tiles, TILE) if per_token else None
    m_tile = tt.max(axis=1)
    m_new = np.maximum.accumulate(m_tile)                  # the running max after each tile
    p = np.exp2(tt - m_new[:, None]).astype(np.float32).astype(np.float64)
    l_tile = p.sum(axis=1)
    w = p * vs if per_token else p                         # per-token V scales ride on p
    if variant == "bf16":
        wq, s = to_bf16(w.astype(np.float32)).astype(np.float64), np.ones(tiles)
        acc = np.einsum("tk,tkd->td", wq, vv)
    elif variant in ("u8_tile", "u8_global"):
        if variant == "u8_tile":
            s = np.maximum(w.max(axis=1), 1e-38) / 255.0
        else:
            s = np.full(tiles, (vs.max() if per_token else 1.0) / 255.0)
        wq = np.clip(np.rint(w / s[:, None]), 0, 255)
        acc = np.einsum("tk,tkd->td", wq, vv) * s[:, None]   # integer sums, then one fp32 scale
    elif variant == "e4m3":
        s = np.maximum(w.max(axis=1), 1e-38) / 448.0
        wq = to_e4m3(w / s[:, None])
        acc = np.einsum("tk,tkd->td", wq, to_e4m3(vv)) * s[:, None]
    else:
        raise ValueError(variant)
    acc = acc.astype(np.float32).astype(np.float64)
    m_fin = m_new[-1]
    fac = np.exp2(m_new - m_fin)                           # each tile's rescale to the final max
    o = (acc * fac[:, None]).sum(axis=0)
    l = (l_tile * fac).sum()
    out = o / l
    return out


def reference(q, k8, k_scale, v8, v_scale, per_token, sm):
    kd = k8 * (k_scale[:, None] if per_token else k_scale[None, :])
    vd = v8 * (v_scale[:, None] if per_token else v_scale[None, :])
    logits = (kd @ q) * sm
    w = np.exp(logits - logits.max())
    return (w @ vd) / w.sum()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--heads", type=int, default=4, help="query heads drawn per workload and kv_len")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    results = []
    t0 = time.time()
    total = len(WORKLOADS) * len(KV_LENS) * 2
    done = 0
    for per_token in (False, True):
        mode = "per_token" if per_token else "per_channel"
        for workload in WORKLOADS:
            for n in KV_LENS:
                worst = {v: 0.0 for v in VARIANTS}
                for _ in range(args.heads):
                    q, k, v, sm = draw(workload, n, rng)
                    k8, ks = quantize(k, per_token)
                    v8, vs = quantize(v, per_token)
                    ref = reference(q, k8, ks, v8, vs, per_token, sm)
                    t = scores_int8(q, k8, ks, per_token, sm)
                    for var in VARIANTS:
                        out = attend(t, v8, vs, per_token, var)
                        if not per_token:
                            out = out * vs
                        err = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300))
                        worst[var] = max(worst[var], err)
                results.append({"scales": mode, "workload": workload, "kv_len": n, "heads": args.heads,
                                **{f"err_{v}": worst[v] for v in VARIANTS}})
                done += 1
                print(f"[{done}/{total}] {mode:11s} {workload:8s} kv {n:6d}: " +
                      "  ".join(f"{v} {worst[v]:.2e}" for v in VARIANTS) + f"   ({time.time() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    print(f"| scales | workload | kv_len | " + " | ".join(VARIANTS) + " |")
    print("|---|---|---|" + "---|" * len(VARIANTS))
    for r in results:
        print(f"| {r['scales']} | {r['workload']} | {r['kv_len']} | " +
              " | ".join(f"{r['err_' + v]:.1e}" for v in VARIANTS) + " |")
    print()
    for v in VARIANTS:
        w = max(r["err_" + v] for r in results)
        print(f"{v}: worst {w:.2e} ({'within' if w <= BOUND else 'over'} the {BOUND:.0e} bound)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"what": "8-bit P·V variants of compute=int8, numpy emulation on the CPU",
                       "bound": BOUND, "tile": TILE, "head_dim": D, "seed": args.seed, "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
