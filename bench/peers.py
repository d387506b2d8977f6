#!/usr/bin/env python3
"""bench/peers.py — kvq against its peers, side by side in one process on one GPU (DESIGN.md §6).

For each shape it builds one int8 paged cache (per-channel scales, shuffled block table) and times:
  sdpa_flash   torch SDPA, flash backend, on a pre-gathered bf16 copy of K/V (gather not timed)
  sdpa_cudnn   torch SDPA, cuDNN backend, same inputs
  seed_torch   the seed's design composed from torch ops: dequantize the referenced blocks to bf16
               (gather + scale), then SDPA flash — timed end to end
  kvq_<path>   kvq.paged_prefill with path fused / dequant / generic (needs the kvq Python module)
  kvq_decode   kvq.paged_decode (decode shapes), vs sdpa_flash decode on gathered bf16 K/V
TFLOP/s counts visible score entries only: 4 * Hq * D * visible_pairs. Decode GB/s counts the int8
K/V bytes of the referenced tokens + scales + Q + O. Writes one JSON (GPU named) to --out.

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

from triton.testing import do_bench

DEV = "cuda"


def bench_ms(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def make_case(B, q_len, kv_len, Hq=32, Hkv=8, D=128, page=64, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    nb_seq = (kv_len + page - 1) // page
    num_blocks = B * nb_seq + 8
    k8 = torch.randint(-127, 128, (num_blocks, Hkv, page, D), dtype=torch.int8, device=DEV, generator=g)
    v8 = torch.randint(-127, 128, (num_blocks, Hkv, page, D), dtype=torch.int8, device=DEV, generator=g)
    ks = torch.rand((Hkv, D), device=DEV, generator=g) * 0.02 + 0.005
    vs = torch.rand((Hkv, D), device=DEV, generator=g) * 0.02 + 0.005
    perm = torch.randperm(num_blocks, device=DEV, generator=g)[: B * nb_seq].to(torch.int32)
    table = perm.view(B, nb_seq).contiguous()
    q = torch.randn((B * q_len, Hq, D), dtype=torch.bfloat16, device=DEV, generator=g)
    cu_q = torch.arange(0, B + 1, dtype=torch.int32, device=DEV) * q_len
    kv_lens = torch.full((B,), kv_len, dtype=torch.int32, device=DEV)
    return dict(B=B, q_len=q_len, kv_len=kv_len, Hq=Hq, Hkv=Hkv, D=D, page=page, k8=k8, v8=v8, ks=ks, vs=vs,
                table=table, q=q, cu_q=cu_q, kv_lens=kv_lens)


def gather_bf16(c, cache, scale):
    B, page, kv_len = c["B"], c["page"], c["kv_len"]
    blocks = cache[c["table"].long()]  # [B, nb, Hkv, page, D]
    x = blocks.permute(0, 2, 1, 3, 4).reshape(B, c["Hkv"], -1, c["D"])[:, :, :kv_len]
    return (x.to(torch.float32) * scale[None, :, None, :]).to(torch.bfloat16)


def visible_pairs(B, q_len, kv_len, causal=True):
    if not causal:
        return B * q_len * kv_len
    prefix = kv_len - q_len
    return B * (q_len * prefix + q_len * (q_len + 1) // 2)


def sdpa(q4, k4, v4, q_len, kv_len):
    if q_len == kv_len:
        return F.scaled_dot_product_attention(q4, k4, v4, is_causal=True)
    return F.scaled_dot_product_attention(q4, k4, v4, attn_mask=causal_lower_right(q_len, kv_len))


def run_prefill(name, c, paths):
    B, q_len, kv_len, Hq, Hkv, D = c["B"], c["q_len"], c["kv_len"], c["Hq"], c["Hkv"], c["D"]
    group = Hq // Hkv
    flops = 4.0 * Hq * D * visible_pairs(B, q_len, kv_len)
    rows = []
    q4 = c["q"].view(B, q_len, Hq, D).transpose(1, 2)
    kb = gather_bf16(c, c["k8"], c["ks"]).repeat_interleave(group, dim=1)
    vb = gather_bf16(c, c["v8"], c["vs"]).repeat_interleave(group, dim=1)

    def add(peer, ms, extra=None):
        r = dict(shape=name, peer=peer, ms=ms, tflops=flops / (ms * 1e-3) / 1e12)
        if extra:
            r.update(extra)
        rows.append(r)
        print(f"  {peer:14s} {ms:9.4f} ms {r['tflops']:8.1f} TFLOP/s", flush=True)

    for peer, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                ms = bench_ms(lambda: sdpa(q4, kb, vb, q_len, kv_len))
            add(peer, ms)
        except Exception as e:
            print(f"  {peer:14s} not run: {str(e).splitlines()[0][:100]}")

    def seed():
        k = gather_bf16(c, c["k8"], c["ks"]).repeat_interleave(group, dim=1)
        v = gather_bf16(c, c["v8"], c["vs"]).repeat_interleave(group, dim=1)
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return sdpa(q4, k, v, q_len, kv_len)
    try:
        add("seed_torch", bench_ms(seed))
    except Exception as e:
        print(f"  seed_torch     not run: {str(e).splitlines()[0][:100]}")

    if HAVE_KVQ:
        ref = None
        # kvq over a bf16 paged cache (the tensor-core kernel without int8): issue 4's bf16 target.
        try:
            k16 = (c["k8"].float() * c["ks"][None, :, None, :]).to(torch.bfloat16)
            v16 = (c["v8"].float() * c["vs"][None, :, None, :]).to(torch.bfloat16)
            out = torch.empty_like(c["q"])
            fn = lambda: kvq.paged_prefill(c["q"], k16, v16, c["table"], c["cu_q"], c["kv_lens"], causal=True,
                                          out=out)
            fn()
            torch.cuda.synchronize()
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                ref = sdpa(q4, kb, vb, q_len, kv_len).transpose(1, 2).reshape_as(out).float()
            err = ((out.float() - ref).norm() / ref.norm()).item()
            add("kvq_bf16cache", bench_ms(fn), dict(rel_err_vs_sdpa=err))
            del k16, v16
        except Exception as e:
            print(f"  kvq_bf16cache  not run: {str(e).splitlines()[0][:160]}")
        for path in paths:
            try:
                out = torch.empty_like(c["q"])
                fn = lambda: kvq.paged_prefill(c["q"], c["k8"], c["v8"], c["table"], c["cu_q"], c["kv_lens"],
                                              k_scale=c["ks"], v_scale=c["vs"], causal=True, path=path, out=out)
                fn()
                torch.cuda.synchronize()
                if ref is None:
                    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                        ref = sdpa(q4, kb, vb, q_len, kv_len).transpose(1, 2).reshape_as(out).float()
                err = ((out.float() - ref).norm() / ref.norm()).item()
                add("kvq_" + path, bench_ms(fn), dict(rel_err_vs_sdpa=err))
            except Exception as e:
                print(f"  kvq_{path:10s} not run: {str(e).splitlines()[0][:160]}")
    return rows


def run_decode(name, B, kv_len, page=16, Hq=32, Hkv=8, D=128):
    c = make_case(B, 1, kv_len, Hq, Hkv, D, page)
    group = Hq // Hkv
    rows = []
    kv_bytes = 2 * B * kv_len * Hkv * D + 2 * Hkv * D * 4 + 2 * 2 * B * Hq * D
    q4 = c["q"].view(B, 1, Hq, D).transpose(1, 2)
    kb = gather_bf16(c, c["k8"], c["ks"]).repeat_interleave(group, dim=1)
    vb = gather_bf16(c, c["v8"], c["vs"]).repeat_interleave(group, dim=1)
    bf16_bytes = 2 * 2 * B * kv_len * Hkv * D + 2 * 2 * B * Hq * D

    def add(peer, ms, nbytes, extra=None):
        r = dict(shape=name, peer=peer, ms=ms, gbps=nbytes / (ms * 1e-3) / 1e9)
        if extra:
            r.update(extra)
        rows.append(r)
        print(f"  {peer:14s} {ms:9.4f} ms {r['gbps']:8.1f} GB/s", flush=True)

    for peer, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        try:
            with sdpa_kernel([backend]):
                ms = bench_ms(lambda: F.scaled_dot_product_attention(q4, kb, vb))
            add(peer, ms, bf16_bytes)
        except Exception as e:
            print(f"  {peer:14s} not run: {str(e).splitlines()[0][:100]}")
    if HAVE_KVQ:
        # kvq_decode: the planner's choice; kvq_decode_split / _tc: each decode route forced
        # (KVQ_DECODE_PATH is read at every call).
        for peer, route in (("kvq_decode", None), ("kvq_decode_split", "split"), ("kvq_decode_tc", "tc")):
            try:
                if route is None:
                    os.environ.pop("KVQ_DECODE_PATH", None)
                else:
                    os.environ["KVQ_DECODE_PATH"] = route
                qd = c["q"].view(B, Hq, D)
                out = torch.empty_like(qd)
                fn = lambda: kvq.paged_decode(qd, c["k8"], c["v8"], c["table"], c["kv_lens"], k_scale=c["ks"],
                                              v_scale=c["vs"], out=out)
                fn()
                torch.cuda.synchronize()
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                    ref = F.scaled_dot_product_attention(q4, kb, vb).transpose(1, 2).reshape_as(out).float()
                err = ((out.float() - ref).norm() / ref.norm()).item()
                add(peer, bench_ms(fn), kv_bytes, dict(rel_err_vs_sdpa=err))
            except Exception as e:
                print(f"  {peer:14s} not run: {str(e).splitlines()[0][:160]}")
        os.environ.pop("KVQ_DECODE_PATH", None)
        # Probe: the same decode step through the fused tensor-core prefill kernel (q_len 1 per sequence).
        try:
            qd = c["q"].view(B, Hq, D)
            out = torch.empty_like(qd)
            cu = torch.arange(0, B + 1, dtype=torch.int32, device=DEV)
            fn = lambda: kvq.paged_prefill(qd, c["k8"], c["v8"], c["table"], cu, c["kv_lens"], k_scale=c["ks"],
                                           v_scale=c["vs"], causal=True, path="fused", out=out)
            fn()
            torch.cuda.synchronize()
            err = ((out.float() - ref).norm() / ref.norm()).item()
            add("kvq_fused_q1", bench_ms(fn), kv_bytes, dict(rel_err_vs_sdpa=err))
        except Exception as e:
            print(f"  kvq_fused_q1   not run: {str(e).splitlines()[0][:160]}")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="the issue-4 shapes only")
    ap.add_argument("--only", default="", help="comma-separated shape names")
    ap.add_argument("--paths", default="fused,dequant", help="kvq prefill paths to time")
    ap.add_argument("--out", default="bench/results/peers.json")
    a = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    paths = [p for p in a.paths.split(",") if p]
    prefill = [
        ("B1_q8192", dict(B=1, q_len=8192, kv_len=8192)),
        ("B8_q2048", dict(B=8, q_len=2048, kv_len=2048)),
        ("B4_q1024_prefix15360", dict(B=4, q_len=1024, kv_len=16384)),
    ]
    if not a.quick:
        prefill += [("B16_q512", dict(B=16, q_len=512, kv_len=512)),
                    ("M_BF16_like_B2_q1024_H16_4_bs32", dict(B=2, q_len=1024, kv_len=1024, Hq=16, Hkv=4, page=32))]
        prefill += [(f"B1_q8192_D{d}", dict(B=1, q_len=8192, kv_len=8192, D=d)) for d in (64, 96, 256)]
        prefill += [(f"B8_q2048_page{p}", dict(B=8, q_len=2048, kv_len=2048, page=p)) for p in (1, 16, 256, 1000)]
    decode = [("decode_B64_kv4096", dict(B=64, kv_len=4096)), ("decode_B8_kv32768", dict(B=8, kv_len=32768))]
    only = set(x for x in a.only.split(",") if x)
    gpu = torch.cuda.get_device_name()
    print(f"GPU: {gpu}; torch {torch.__version__}; kvq module: {HAVE_KVQ}", flush=True)
    rows = []
    for name, kw in prefill:
        if only and name not in only:
            continue
        print(f"{name} {kw}", flush=True)
        c = make_case(**kw)
        rows += run_prefill(name, c, paths)
        del c
        torch.cuda.empty_cache()
    for name, kw in decode:
        if only and name not in only:
            continue
        print(f"{name} {kw}", flush=True)
        rows += run_decode(name, **kw)
    result = dict(gpu=gpu, torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  note="same process, same GPU; TFLOP/s counts visible score entries", rows=rows)
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
