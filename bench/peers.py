#!/usr/bin/env python3
"""bench/peers.py — kvq against its peers, side by side in one process on one GPU.

Every peer runs in its best configuration: GQA through `enable_gqa=True` over the Hkv heads (K/V
are never expanded to Hq heads), each torch SDPA backend tried, and the fastest peer of a shape is
named its best peer. For each shape one int8 paged cache is built (per-channel scales, shuffled
block table); the dense peers get a pre-gathered bf16 copy of it (the gather is not timed).

Peers (prefill):
  sdpa_flash / sdpa_cudnn / sdpa_efficient   torch SDPA with that backend, enable_gqa=True
  mojo_design_torch   the mojo_opset PR #361 design composed from torch ops: dequantize the
                      referenced blocks to bf16 (gather + scale), then the fastest SDPA backend
                      of the shape, timed end to end
  kvq_<path>          kvq prefill over the int8 cache, path fused (the default) / dequant / ...
  kvq_bf16cache       kvq prefill over a bf16 paged cache
  Every kvq prefill is kvq.PagedPrefill planned from the host lengths (as an engine plans each step:
  the real longest chunk and key count), then run; the planning is not timed.
Peers (decode; every peer is timed as CUDA-graph replays, rotating over enough copies of the
inputs that they do not fit in L2):
  sdpa_*              as above, q_len 1 (or the shape's q_len, bottom-right causal)
  kvq_decode          kvq.paged_decode over the int8 cache, the planner's kernel
  kvq_decode_<route>  the same with a decode kernel forced (KVQ_DECODE_PATH)
  kvq_decode_bf16cache  kvq.paged_decode over a bf16 paged cache
  kvq_prefill         q_len > 1 (multi-token decode): kvq.PagedPrefill planned from the host lengths,
                      the planner's kernel (the tensor-core decode kernel where it applies; the row's
                      "kernel" field says which); kvq_prefill_prefill_kernel: the same with
                      KVQ_SMALL_Q_DECODE=0 (the tensor-core prefill kernel), for A/B
TFLOP/s counts visible score entries only: 4 * Hq * D * visible_pairs. GB/s counts the bytes that
must move: the K/V of the referenced tokens in the peer's own cache dtype (int8 for kvq, bf16 for
the dense peers) + scales + Q + O. Each run also measures the GPU's ceilings (device copy and
bf16 GEMM) and reports kvq's fraction of them. Writes one JSON (GPU named; no NaN/inf) to --out.

usage: python3 bench/peers.py [--quick] [--only NAME,...] [--out bench/results/peers.json]
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

try:
    from torch.nn.attention.bias import causal_lower_right
except ImportError:  # pragma: no cover
    causal_lower_right = None

try:
    import kvq  # noqa: F401
    HAVE_KVQ = True
except Exception as e:  # the module is optional: peers still run
    print(f"kvq python module not importable ({e}); kvq rows skipped", file=sys.stderr)
    HAVE_KVQ = False

from triton.testing import do_bench, do_bench_cudagraph

DEV = "cuda"
BACKENDS = (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION),
            ("sdpa_efficient", SDPBackend.EFFICIENT_ATTENTION))
L2_ROTATE_BYTES = 256 << 20  # decode inputs are replicated until one replay touches this much


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def bench_ms(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def bench_graph_ms(fns):
    """Median time of one call, from CUDA-graph replays of fns (one call per input copy)."""
    def all_sets():
        for f in fns:
            f()
    all_sets()
    torch.cuda.synchronize()
    return do_bench_cudagraph(all_sets, rep=60, return_mode="median") / len(fns)


def finite_or_none(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def short(e):
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


# ---------------------------------------------------------------- ceilings

def measure_ceilings():
    n = 1 << 30  # 1 GiB copy: reads 1 GiB, writes 1 GiB
    a = torch.empty(n, dtype=torch.uint8, device=DEV).random_(0, 255)
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=25, rep=200, return_mode="median")
    copy_tbps = 2 * n / (ms * 1e-3) / 1e12
    read_ms = do_bench(lambda: a.view(torch.int64).sum(), warmup=25, rep=200, return_mode="median")
    read_tbps = n / (read_ms * 1e-3) / 1e12
    del a, b
    m = 8192
    x = torch.randn(m, m, dtype=torch.bfloat16, device=DEV)
    y = torch.randn(m, m, dtype=torch.bfloat16, device=DEV)
    ms = do_bench(lambda: x @ y, warmup=50, rep=300, return_mode="median")
    gemm = 2 * m ** 3 / (ms * 1e-3) / 1e12
    del x, y
    torch.cuda.empty_cache()
    return dict(copy_tbps=copy_tbps, read_tbps=read_tbps, bf16_gemm_tflops=gemm,
                method="copy: 1 GiB device copy, bytes read + written; read: int64 sum over 1 GiB; "
                       "gemm: bf16 8192^3 torch.matmul on random data")


# ---------------------------------------------------------------- inputs

def make_case(B, q_len, kv_len, Hq=32, Hkv=8, D=128, page=64, seed=0, q_dtype=torch.bfloat16):
    g = torch.Generator(device=DEV).manual_seed(seed)
    nb_seq = (kv_len + page - 1) // page
    num_blocks = B * nb_seq + 8
    k8 = torch.randint(-127, 128, (num_blocks, Hkv, page, D), dtype=torch.int8, device=DEV, generator=g)
    v8 = torch.randint(-127, 128, (num_blocks, Hkv, page, D), dtype=torch.int8, device=DEV, generator=g)
    ks = torch.rand((Hkv, D), device=DEV, generator=g) * 0.02 + 0.005
    vs = torch.rand((Hkv, D), device=DEV, generator=g) * 0.02 + 0.005
    perm = torch.randperm(num_blocks, device=DEV, generator=g)[: B * nb_seq].to(torch.int32)
    table = perm.view(B, nb_seq).contiguous()
    q = torch.randn((B * q_len, Hq, D), dtype=q_dtype, device=DEV, generator=g)
    cu_q = torch.arange(0, B + 1, dtype=torch.int32, device=DEV) * q_len
    kv_lens = torch.full((B,), kv_len, dtype=torch.int32, device=DEV)
    return dict(B=B, q_len=q_len, kv_len=kv_len, Hq=Hq, Hkv=Hkv, D=D, page=page, k8=k8, v8=v8, ks=ks, vs=vs,
                table=table, q=q, cu_q=cu_q, kv_lens=kv_lens,
                cu_host=[b * q_len for b in range(B + 1)], kv_host=[kv_len] * B)  # what an engine's scheduler knows


def kvq_planned(c, k, v, path="auto", compute="bf16", **scales):
    """kvq.PagedPrefill for case c over caches k, v, planned from the case's host lengths."""
    pp = kvq.PagedPrefill(causal=True, path=path, compute=compute)
    pp.plan(c["cu_host"], c["kv_host"], c["q"], k, v, c["table"], c["cu_q"], c["kv_lens"], **scales)
    return pp


def gather_dense(c, cache, scale, dtype=torch.bfloat16):
    """[B, Hkv, kv_len, D] dense copy of the referenced tokens (what the dense peers read)."""
    B, kv_len = c["B"], c["kv_len"]
    blocks = cache[c["table"].long()]  # [B, nb, Hkv, page, D]
    x = blocks.permute(0, 2, 1, 3, 4).reshape(B, c["Hkv"], -1, c["D"])[:, :, :kv_len]
    return (x.to(torch.float32) * scale[None, :, None, :]).to(dtype)


def paged_16bit(c, dtype):
    return ((c["k8"].float() * c["ks"][None, :, None, :]).to(dtype),
            (c["v8"].float() * c["vs"][None, :, None, :]).to(dtype))


def visible_pairs(B, q_len, kv_len, causal=True):
    if not causal:
        return B * q_len * kv_len
    prefix = kv_len - q_len
    return B * (q_len * prefix + q_len * (q_len + 1) // 2)


def sdpa(q4, k4, v4, q_len, kv_len):
    if q_len == 1:
        return F.scaled_dot_product_attention(q4, k4, v4, enable_gqa=True)
    if q_len == kv_len:
        return F.scaled_dot_product_attention(q4, k4, v4, is_causal=True, enable_gqa=True)
    return F.scaled_dot_product_attention(q4, k4, v4, attn_mask=causal_lower_right(q_len, kv_len), enable_gqa=True)


def rel_err(out, ref):
    return finite_or_none(((out.float() - ref).norm() / ref.norm()).item())


# ---------------------------------------------------------------- prefill

def run_prefill(name, c, paths):
    B, q_len, kv_len, Hq, D = c["B"], c["q_len"], c["kv_len"], c["Hq"], c["D"]
    flops = 4.0 * Hq * D * visible_pairs(B, q_len, kv_len)
    rows = []
    q4 = c["q"].view(B, q_len, Hq, D).transpose(1, 2)
    kb = gather_dense(c, c["k8"], c["ks"])
    vb = gather_dense(c, c["v8"], c["vs"])
    ref = None

    def add(peer, ms, extra=None):
        r = dict(shape=name, peer=peer, ms=ms, tflops=flops / (ms * 1e-3) / 1e12)
        r.update(extra or {})
        rows.append(r)
        log(f"  {peer:18s} {ms:9.4f} ms {r['tflops']:8.1f} TFLOP/s")

    best_backend, best_ms = None, float("inf")
    for peer, backend in BACKENDS:
        try:
            with sdpa_kernel([backend]):
                out = sdpa(q4, kb, vb, q_len, kv_len)
                ms = bench_ms(lambda: sdpa(q4, kb, vb, q_len, kv_len))
            if ref is None:
                ref = out.transpose(1, 2).reshape_as(c["q"]).float()
            add(peer, ms)
            if ms < best_ms:
                best_backend, best_ms = backend, ms
        except Exception as e:
            log(f"  {peer:18s} not run: {short(e)}")

    if best_backend is not None:
        def mojo_design():
            k = gather_dense(c, c["k8"], c["ks"])
            v = gather_dense(c, c["v8"], c["vs"])
            with sdpa_kernel([best_backend]):
                return sdpa(q4, k, v, q_len, kv_len)
        try:
            add("mojo_design_torch", bench_ms(mojo_design), dict(sdpa_backend=str(best_backend)))
        except Exception as e:
            log(f"  mojo_design_torch  not run: {short(e)}")
    del kb, vb

    if HAVE_KVQ:
        try:
            k16, v16 = paged_16bit(c, c["q"].dtype)
            out = torch.empty_like(c["q"])
            pp = kvq_planned(c, k16, v16)
            fn = lambda: pp.run(c["q"], k16, v16, c["table"], c["cu_q"], c["kv_lens"], out=out)
            fn()
            torch.cuda.synchronize()
            add("kvq_bf16cache", bench_ms(fn), dict(rel_err_vs_sdpa=rel_err(out, ref) if ref is not None else None,
                                                    kernel=pp.plan_info.kernel))
            del k16, v16
        except Exception as e:
            log(f"  kvq_bf16cache      not run: {short(e)}")
        # kvq_int8: compute="int8" (int8 Q·Kᵀ) on the planner's path, FLOPs counted as for the others.
        for path, compute, peer in [(p, "bf16", "kvq_" + p) for p in paths] + [("auto", "int8", "kvq_int8")]:
            try:
                out = torch.empty_like(c["q"])
                pp = kvq_planned(c, c["k8"], c["v8"], path=path, compute=compute, k_scale=c["ks"], v_scale=c["vs"])
                fn = lambda: pp.run(c["q"], c["k8"], c["v8"], c["table"], c["cu_q"], c["kv_lens"],
                                    k_scale=c["ks"], v_scale=c["vs"], out=out)
                fn()
                torch.cuda.synchronize()
                add(peer, bench_ms(fn), dict(rel_err_vs_sdpa=rel_err(out, ref) if ref is not None else None,
                                             kernel=pp.plan_info.kernel))
            except Exception as e:
                log(f"  {peer:18s} not run: {short(e)}")
    return rows


# ---------------------------------------------------------------- decode

def run_decode(name, B, kv_len, page=16, Hq=32, Hkv=8, D=128, q_len=1, routes=()):
    c0 = make_case(B, q_len, kv_len, Hq, Hkv, D, page)
    int8_bytes = (2 * B * kv_len * Hkv * D + 2 * Hkv * D * 4 + 2 * 2 * B * q_len * Hq * D)
    bf16_bytes = 2 * 2 * B * kv_len * Hkv * D + 2 * 2 * B * q_len * Hq * D
    nsets = max(1, min(16, -(-L2_ROTATE_BYTES // int8_bytes)))
    cases = [c0] + [make_case(B, q_len, kv_len, Hq, Hkv, D, page, seed=s) for s in range(1, nsets)]
    rows = []

    def add(peer, ms, nbytes, extra=None):
        r = dict(shape=name, peer=peer, ms=ms, gbps=nbytes / (ms * 1e-3) / 1e9)
        r.update(extra or {})
        rows.append(r)
        log(f"  {peer:22s} {ms:9.4f} ms {r['gbps']:8.1f} GB/s")

    q4s = [c["q"].view(B, q_len, Hq, D).transpose(1, 2) for c in cases]
    dense = [(gather_dense(c, c["k8"], c["ks"]), gather_dense(c, c["v8"], c["vs"])) for c in cases]
    ref = None
    for peer, backend in BACKENDS:
        try:
            with sdpa_kernel([backend]):
                out = sdpa(q4s[0], dense[0][0], dense[0][1], q_len, kv_len)
                fns = [lambda i=i: sdpa(q4s[i], dense[i][0], dense[i][1], q_len, kv_len) for i in range(nsets)]
                ms = bench_graph_ms(fns)
            if ref is None:
                ref = out.transpose(1, 2).reshape(B * q_len, Hq, D).float()
            add(peer, ms, bf16_bytes)
        except Exception as e:
            log(f"  {peer:22s} not run: {short(e)}")
    del dense
    torch.cuda.empty_cache()

    if HAVE_KVQ:
        def kvq_fns(k_of, v_of, scaled, num_splits=0):
            """One call per input copy; q_len > 1: kvq.PagedPrefill planned (untimed, outside the graph)
            from the host lengths, as an engine plans a step, then run. Returns fns, outs, kernel."""
            outs = [torch.empty_like(c["q"]) for c in cases]
            fns, kernel = [], "decode"
            for i, c in enumerate(cases):
                kw = dict(k_scale=c["ks"], v_scale=c["vs"]) if scaled else {}
                if num_splits:
                    kw["num_splits"] = num_splits
                if q_len == 1:
                    qd = c["q"].view(B, Hq, D)
                    fns.append(lambda c=c, qd=qd, o=outs[i], kw=kw, i=i: kvq.paged_decode(
                        qd, k_of(i), v_of(i), c["table"], c["kv_lens"], out=o.view(B, Hq, D), **kw))
                else:
                    pp = kvq_planned(c, k_of(i), v_of(i), **kw)
                    kernel = pp.plan_info.kernel
                    fns.append(lambda c=c, o=outs[i], kw=kw, i=i, pp=pp: pp.run(
                        c["q"], k_of(i), v_of(i), c["table"], c["cu_q"], c["kv_lens"], out=o, **kw))
            return fns, outs, kernel

        # q_len > 1 (multi-token decode) goes through kvq.PagedPrefill: the planner's kernel, named
        # kvq_prefill; kvq_prefill_prefill_kernel keeps the prefill kernel (KVQ_SMALL_Q_DECODE=0, read
        # when planning) for A/B.
        base = "kvq_decode" if q_len == 1 else "kvq_prefill"
        if q_len == 1:
            variants = [(base, None, None)] + [("kvq_decode_" + r, r, None) for r in routes]
        else:
            variants = [(base, None, None), (base + "_prefill_kernel", None, "0")]
        for peer, route, small_q in variants:
            try:
                os.environ.pop("KVQ_DECODE_PATH", None)
                os.environ.pop("KVQ_DECODE_KERNEL", None)
                splits = 0
                if route in ("v5", "s8"):  # the tensor-core decode's other variants (KVQ_DECODE_KERNEL)
                    os.environ["KVQ_DECODE_KERNEL"] = route
                elif route is not None and route.startswith("splits"):  # a forced split count (tuning)
                    splits = int(route[len("splits"):])
                elif route is not None:
                    os.environ["KVQ_DECODE_PATH"] = route
                if small_q is None:
                    os.environ.pop("KVQ_SMALL_Q_DECODE", None)
                else:
                    os.environ["KVQ_SMALL_Q_DECODE"] = small_q
                fns, outs, kernel = kvq_fns(lambda i: cases[i]["k8"], lambda i: cases[i]["v8"], True, splits)
                fns[0]()
                torch.cuda.synchronize()
                err = rel_err(outs[0], ref) if ref is not None else None
                add(peer, bench_graph_ms(fns), int8_bytes, dict(rel_err_vs_sdpa=err, route=route or "auto",
                                                                kernel=kernel))
            except Exception as e:
                log(f"  {peer:22s} not run: {short(e)}")
        os.environ.pop("KVQ_DECODE_PATH", None)
        os.environ.pop("KVQ_DECODE_KERNEL", None)
        os.environ.pop("KVQ_SMALL_Q_DECODE", None)
        try:
            c16 = [paged_16bit(c, c["q"].dtype) for c in cases]
            fns, outs, kernel = kvq_fns(lambda i: c16[i][0], lambda i: c16[i][1], False)
            fns[0]()
            torch.cuda.synchronize()
            err = rel_err(outs[0], ref) if ref is not None else None
            add(base + "_bf16cache", bench_graph_ms(fns), bf16_bytes, dict(rel_err_vs_sdpa=err, kernel=kernel))
            del c16
        except Exception as e:
            log(f"  kvq_decode_bf16cache   not run: {short(e)}")
    del cases
    torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------- summary

def summarize(rows, ceilings):
    """Per shape: the best non-kvq peer and each kvq row's speedup over it (best_ms / kvq_ms)."""
    out = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        rs = [r for r in rows if r["shape"] == shape]
        peers = [r for r in rs if not r["peer"].startswith("kvq")]
        best = min(peers, key=lambda r: r["ms"]) if peers else None
        for r in rs:
            if not r["peer"].startswith("kvq"):
                continue
            s = dict(shape=shape, kvq=r["peer"], kvq_ms=r["ms"], best_peer=best["peer"] if best else None,
                     best_peer_ms=best["ms"] if best else None,
                     speedup_vs_best=(best["ms"] / r["ms"]) if best else None)
            if "tflops" in r:
                s["fraction_of_gemm_ceiling"] = r["tflops"] / ceilings["bf16_gemm_tflops"]
            if "gbps" in r:
                s["fraction_of_read_ceiling"] = r["gbps"] / 1e3 / ceilings["read_tbps"]
            out.append(s)
    return out


def clean(x):
    if isinstance(x, dict):
        return {k: clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [clean(v) for v in x]
    return finite_or_none(x)


PREFILL = [
    ("B1_q8192", dict(B=1, q_len=8192, kv_len=8192)),
    ("B8_q2048", dict(B=8, q_len=2048, kv_len=2048)),
    ("B4_q1024_prefix15360", dict(B=4, q_len=1024, kv_len=16384)),
    ("B16_q512", dict(B=16, q_len=512, kv_len=512)),
    ("B1_q8192_D64", dict(B=1, q_len=8192, kv_len=8192, Hq=32, Hkv=32, D=64)),
    ("B1_q4096_D256", dict(B=1, q_len=4096, kv_len=4096, Hq=16, Hkv=2, D=256)),
    # mojo_opset PR #361's test shapes (uniform lengths): M_BF16, M_BF16_PADDIM, M_BF16_ODD_KV_333.
    ("mojo_M_BF16", dict(B=2, q_len=1024, kv_len=1024, Hq=16, Hkv=4, page=32)),
    ("mojo_PADDIM_D96_bs128", dict(B=2, q_len=1024, kv_len=1024, Hq=16, Hkv=4, D=96, page=128)),
    ("mojo_ODD_KV_333_bs256", dict(B=5, q_len=1025, kv_len=1025 + 333, Hq=16, Hkv=4, page=256)),
]
PREFILL_FULL = [
    ("B1_q8192_D96", dict(B=1, q_len=8192, kv_len=8192, D=96)),
] + [(f"B8_q2048_page{p}", dict(B=8, q_len=2048, kv_len=2048, page=p)) for p in (1, 16, 256, 1000)]
DECODE = [
    ("decode_B64_kv4096", dict(B=64, kv_len=4096)),
    ("decode_B8_kv32768", dict(B=8, kv_len=32768)),
    ("decode_B1_kv131072", dict(B=1, kv_len=131072)),
    ("decode_B128_kv2048", dict(B=128, kv_len=2048)),
    ("decode_B1_kv4096", dict(B=1, kv_len=4096)),
    ("decode_B64_kv4096_page64", dict(B=64, kv_len=4096, page=64)),
    ("decode_B64_kv4096_g1", dict(B=64, kv_len=4096, Hq=32, Hkv=32)),
    ("decode_B64_kv4096_g8", dict(B=64, kv_len=4096, Hq=64, Hkv=8)),
    ("decode_B64_kv4096_D64", dict(B=64, kv_len=4096, D=64)),
    ("decode_B64_kv4096_D256", dict(B=64, kv_len=4096, D=256)),
    ("decode_B64_kv4096_q4", dict(B=64, kv_len=4096, q_len=4)),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the first three prefill and two decode shapes")
    ap.add_argument("--full", action="store_true", help="also D96 and the page-size sweep")
    ap.add_argument("--only", default="", help="comma-separated shape names")
    ap.add_argument("--paths", default="fused,dequant", help="kvq prefill paths to time")
    ap.add_argument("--routes", default="split", help="decode kernels timed beside the default: KVQ_DECODE_PATH values (split, tc), v5 / s8 "
                    "(KVQ_DECODE_KERNEL: the tensor-core decode without bulk copies / with int8 Q·Kᵀ), or "
                    "splitsN (the default kernel with num_splits=N)")
    ap.add_argument("--out", default="bench/results/peers.json")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    paths = [p for p in a.paths.split(",") if p]
    routes = [r for r in a.routes.split(",") if r]
    prefill = PREFILL[:3] if a.quick else PREFILL + (PREFILL_FULL if a.full else [])
    decode = DECODE[:2] if a.quick else DECODE
    only = set(x for x in a.only.split(",") if x)
    gpu = torch.cuda.get_device_name()
    log(f"GPU: {gpu}; torch {torch.__version__}; kvq module: {HAVE_KVQ}")
    ceilings = measure_ceilings()
    log("ceilings: copy %.2f TB/s, read %.2f TB/s, bf16 GEMM %.0f TFLOP/s" %
        (ceilings["copy_tbps"], ceilings["read_tbps"], ceilings["bf16_gemm_tflops"]))
    rows = []
    todo = [(n, kw, "prefill") for n, kw in prefill] + [(n, kw, "decode") for n, kw in decode]
    todo = [t for t in todo if not only or t[0] in only]
    for i, (name, kw, kind) in enumerate(todo):
        log(f"[{i + 1}/{len(todo)}] {name} {kw}")
        try:
            if kind == "prefill":
                rows += run_prefill(name, make_case(**kw), paths)
            else:
                rows += run_decode(name, routes=routes, **kw)
        except torch.OutOfMemoryError as e:
            log(f"  shape skipped: {short(e)}")
        torch.cuda.empty_cache()
    summary = summarize(rows, ceilings)
    result = dict(gpu=gpu, torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  ceilings=ceilings,
                  note="same process, same GPU; every peer in its best configuration (enable_gqa=True over Hkv "
                       "heads, each SDPA backend tried); TFLOP/s counts visible score entries; decode timed as "
                       "CUDA-graph replays over rotated input copies",
                  rows=rows, summary=summary)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(clean(result), f, indent=1, allow_nan=False)
    print(f"{'shape':28s} {'kvq':22s} {'kvq ms':>9s} {'best peer':16s} {'peer ms':>9s} {'speedup':>8s}")
    for s in summary:
        sp = s["speedup_vs_best"]
        print(f"{s['shape']:28s} {s['kvq']:22s} {s['kvq_ms']:9.4f} {str(s['best_peer']):16s} "
              f"{(s['best_peer_ms'] or 0):9.4f} {('%.2fx' % sp) if sp else '-':>8s}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
