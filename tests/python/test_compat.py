"""kvq.compat.mojo (the seed's signatures) on numpy inputs (CPU backend): seed-style data, the seed's
tolerances and ours. The shapes are the seed matrix's head/page geometry with shorter sequences
(the CPU backend and the fp64 reference must stay quick on CI); test_torch_cuda.py runs the full
matrix on a GPU."""
import zlib

import numpy as np
import pytest

import kvq
from kvq.compat import mojo
from kvq_ref import assert_close_attention, quantize, ref_attention
import seed_cases as sc

# Seed geometry (B, Hq, Hkv, D, bs) with Q and KC divided down for the CPU.
SHRINK = 16


def build_seed_prefill(B, Hq, Hkv, D, Q, KC, bs, seed, scale_dtype=np.float16):
    rng = np.random.default_rng(seed)
    q_lens, kv_lens = sc.prefill_lengths(B, Q, KC, rng)
    bt, num_blocks = sc.paged_table(kv_lens, bs, rng)
    T = int(q_lens.sum())
    q = rng.standard_normal((T, Hq, D)).astype(np.float16)
    k = rng.standard_normal((num_blocks, Hkv, bs, D)).astype(np.float32)
    v = rng.standard_normal((num_blocks, Hkv, bs, D)).astype(np.float32)
    ks = np.maximum(np.abs(k).max(axis=(0, 2)) / 127, 1e-5).astype(scale_dtype)  # [Hkv, D]
    vs = np.maximum(np.abs(v).max(axis=(0, 2)) / 127, 1e-5).astype(scale_dtype)
    kc = quantize(k, ks.astype(np.float32)[None, :, None, :])
    vc = quantize(v, vs.astype(np.float32)[None, :, None, :])
    return dict(q=q, kc=kc, vc=vc, ks=ks, vs=vs, bt=bt, q_lens=q_lens, kv_lens=kv_lens,
                cu_q=sc.cumulative(q_lens), cu_kv=sc.cumulative(kv_lens), Hkv=Hkv, bs=bs)


def dense(d, cache, scale):
    out = []
    for b, n in enumerate(d["kv_lens"]):
        rows = []
        for j in range(int(n)):
            blk = d["bt"][b, j // d["bs"]]
            rows.append(cache[blk, :, j % d["bs"], :].astype(np.float64) * scale.astype(np.float64))
        out.append(np.stack(rows) if rows else np.zeros((0, d["Hkv"], cache.shape[-1])))
    return out


@pytest.mark.parametrize("case_id", list(sc.PREFILL))
@pytest.mark.parametrize("gqa_layout", ["AABB", "ABAB"])
def test_compat_prefill_seed_matrix_shrunk(case_id, gqa_layout):
    B, Hq, Hkv, D, Q, KC, bs = sc.PREFILL[case_id]
    Q, KC = max(Q // SHRINK, 3), (max(KC // SHRINK, 3) if KC else 0)
    d = build_seed_prefill(B, Hq, Hkv, D, Q, KC, bs, seed=zlib.crc32(case_id.encode()) % 1000)
    out = mojo.prefill(d["q"], d["kc"], d["vc"], d["ks"], d["vs"], d["bt"], d["cu_q"], d["cu_kv"],
                       gqa_layout=gqa_layout)
    ref, _ = ref_attention(d["q"], dense(d, d["kc"], d["ks"]), dense(d, d["vc"], d["vs"]), d["cu_q"], d["kv_lens"],
                           num_kv_heads=Hkv, gqa_layout=gqa_layout)
    ok, frac = sc.seed_pass(out.astype(np.float64), ref, sc.PREFILL_TOL)
    assert ok, f"seed criterion: only {frac:.3f} of elements within tolerance"
    assert_close_attention(out, ref, d["cu_q"], B)


@pytest.mark.parametrize("global_window,local_window", [(4, 15), (4, 63)])
def test_compat_prefill_sliding_window(global_window, local_window):
    d = build_seed_prefill(3, 12, 3, 64, 96, 80, 16, seed=5)
    out = mojo.prefill(d["q"], d["kc"], d["vc"], d["ks"], d["vs"], d["bt"], d["cu_q"], d["cu_kv"],
                       local_window=local_window, global_window=global_window)
    ref, _ = ref_attention(d["q"], dense(d, d["kc"], d["ks"]), dense(d, d["vc"], d["vs"]), d["cu_q"], d["kv_lens"],
                           num_kv_heads=3, local_window=local_window, global_window=global_window)
    assert_close_attention(out, ref, d["cu_q"], 3)


def test_compat_prefill_int64_metadata_and_out():
    d = build_seed_prefill(2, 8, 2, 64, 40, 30, 16, seed=6)
    out = np.zeros(d["q"].shape, np.float16)
    res = mojo.prefill(d["q"], d["kc"], d["vc"], d["ks"], d["vs"], d["bt"].astype(np.int64),
                       d["cu_q"].astype(np.int64), d["cu_kv"].astype(np.int64), out=out)
    assert res is out
    native = kvq.paged_prefill(d["q"], d["kc"], d["vc"], d["bt"], d["cu_q"], cu_kv_lens=d["cu_kv"], k_scale=d["ks"],
                               v_scale=d["vs"])
    np.testing.assert_array_equal(out, native)


def test_compat_prefill_bucket_padding():
    # cu_q_lens [0,1,2,3,4,4,4] with a repeated tail, kv [1,1,1,1,0,0], T = 8 slots, table rows 4-5 all -1.
    rng = np.random.default_rng(7)
    Hq, Hkv, D, bs = 4, 2, 128, 16
    kv_lens = np.array([1, 1, 1, 1, 0, 0])
    bt, nb = sc.paged_table(kv_lens, bs, rng)
    q = rng.standard_normal((8, Hq, D)).astype(np.float16)
    kc = rng.integers(-128, 128, (nb, Hkv, bs, D), dtype=np.int8)
    vc = rng.integers(-128, 128, (nb, Hkv, bs, D), dtype=np.int8)
    s = np.full((Hkv, D), 0.01, np.float16)
    out = np.full(q.shape, np.float16(9.0))
    mojo.prefill(q, kc, vc, s, s, bt, np.array([0, 1, 2, 3, 4, 4, 4], np.int32), sc.cumulative(kv_lens), out=out)
    assert np.isfinite(out[:4]).all() and np.all(out[4:] == np.float16(9.0))


def test_compat_prefill_errors_name_seed_arguments():
    d = build_seed_prefill(2, 8, 2, 64, 20, 0, 16, seed=8)
    with pytest.raises(ValueError, match="cu_total_seq_lens"):
        mojo.prefill(d["q"], d["kc"], d["vc"], d["ks"], d["vs"], d["bt"], d["cu_q"], d["cu_kv"][None])
    with pytest.raises(ValueError, match="compute_dtype"):
        mojo.prefill(d["q"], d["kc"], d["vc"], d["ks"], d["vs"], d["bt"], d["cu_q"], d["cu_kv"], compute_dtype="fp8")
    with pytest.raises(TypeError, match="cu_seqlens_q"):
        mojo.prefill(d["q"], d["kc"], d["vc"], d["ks"], d["vs"], d["bt"], [0, 1, 2], d["cu_kv"])


@pytest.mark.parametrize("case_id", list(sc.DECODE))
def test_compat_decode_seed_matrix_shrunk(case_id):
    B, Hq, Hkv, D, S, bs = sc.DECODE[case_id]
    S = max(S // SHRINK, 3)
    rng = np.random.default_rng(zlib.crc32(case_id.encode()) % 1000)
    kv_lens = sc.decode_lengths(B, S, rng)
    bt, nb = sc.paged_table(kv_lens, bs, rng)
    q = rng.standard_normal((B, Hq, D)).astype(np.float16)
    k = rng.standard_normal((nb, Hkv, bs, D)).astype(np.float32)
    v = rng.standard_normal((nb, Hkv, bs, D)).astype(np.float32)
    ks = np.maximum(np.abs(k).max(axis=(0, 2)) / 127, 1e-5).astype(np.float32)
    vs = np.maximum(np.abs(v).max(axis=(0, 2)) / 127, 1e-5).astype(np.float32)
    kc, vc = quantize(k, ks[None, :, None, :]), quantize(v, vs[None, :, None, :])
    out = mojo.decode(q, kc, vc, ks, vs, bt, sc.cumulative(kv_lens))
    d = dict(kv_lens=kv_lens, bt=bt, bs=bs, Hkv=Hkv)
    cu_q = np.arange(B + 1, dtype=np.int32)
    ref, _ = ref_attention(q, dense(d, kc, ks), dense(d, vc, vs), cu_q, kv_lens, num_kv_heads=Hkv)
    ok = np.abs(out.astype(np.float64) - ref) <= sc.DECODE_TOL + sc.DECODE_TOL * np.abs(ref)
    assert ok.all(), f"seed criterion (every element): {int((~ok).sum())} elements off"
    assert_close_attention(out, ref, cu_q, B)


@pytest.mark.parametrize("case_id", list(sc.CACHE_WRITE))
def test_compat_store_kv_cache_seed_cases(case_id):
    B, Hkv, D, bs, prefix, new = sc.CACHE_WRITE[case_id]
    rng = np.random.default_rng(11)
    prefix = np.array(prefix, np.int64)
    new = np.array(new, np.int64)
    total = np.where(prefix < 0, 0, prefix + new)
    bt, nb = sc.paged_table(total, bs, rng)
    cu = sc.cumulative(new)
    N = int(cu[-1])
    k = rng.standard_normal((N, Hkv, D)).astype(np.float16)
    v = rng.standard_normal((N, Hkv, D)).astype(np.float16)
    ks = (0.01 + 0.03 * rng.random((Hkv, D))).astype(np.float32)
    vs = (0.01 + 0.03 * rng.random((Hkv, D))).astype(np.float32)
    kc = np.zeros((nb, Hkv, bs, D), np.int8)
    vc = np.zeros((nb, Hkv, bs, D), np.int8)
    ek, ev = kc.copy(), vc.copy()
    for b in range(B):
        if prefix[b] < 0:
            continue
        for t in range(int(cu[b]), int(cu[b + 1])):
            pos = int(prefix[b]) + t - int(cu[b])
            blk = bt[b, pos // bs]
            ek[blk, :, pos % bs] = quantize(k[t].astype(np.float32), ks)
            ev[blk, :, pos % bs] = quantize(v[t].astype(np.float32), vs)
    mojo.store_kv_cache(k, v, kc, vc, ks, vs, bt, cu, prefix)
    # The seed's criterion: at most one unit per element, at most 1e-5 of elements differing.
    for got, exp in ((kc, ek), (vc, ev)):
        diff = np.abs(got.astype(np.int32) - exp.astype(np.int32))
        assert diff.max() <= 1
        assert (diff > 0).mean() <= 1e-5
        np.testing.assert_array_equal(got, exp)  # and ours: bit-exact on the CPU


def test_compat_slot_mapping():
    bt = np.array([[3, 1, -1], [0, 2, 4]], np.int32)
    slots = mojo.slot_mapping(bt, np.array([0, 3, 5]), np.array([2, -1]), 6, 2)
    # seq 0: positions 2,3,4 -> blocks bt[0,1]=1 (offs 0,1), bt[0,2]=-1 -> skipped; seq 1 padded; token 5 past end.
    np.testing.assert_array_equal(slots, [2, 3, -1, -1, -1, -1])
