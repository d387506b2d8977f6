"""kvq.append, kvq.dequantize_blocks and kvq.calibrate on numpy inputs against numpy references."""
import numpy as np
import pytest

import kvq
from kvq_ref import (PagedCase, calibrate_scale, per_token_scale, quantize, ref_append, ref_dequant_block)


def empty_cache(num_blocks, Hkv, ps, D, layout):
    shape = (num_blocks, Hkv, ps, D) if layout == "HND" else (num_blocks, ps, Hkv, D)
    return np.zeros(shape, np.int8), np.zeros(shape, np.int8)


def per_token_shape(num_blocks, Hkv, ps, layout):
    return (num_blocks, Hkv, ps) if layout == "HND" else (num_blocks, ps, Hkv)


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("slot_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("x_dtype", [np.float16, np.float32])
def test_append_per_channel_bit_exact(layout, slot_dtype, x_dtype):
    rng = np.random.default_rng(1)
    nb, Hkv, ps, D, N = 6, 2, 4, 16, 9
    kc, vc = empty_cache(nb, Hkv, ps, D, layout)
    ks = (0.01 + 0.02 * rng.random((Hkv, D))).astype(np.float32)
    vs = (0.01 + 0.02 * rng.random((Hkv, D))).astype(np.float32)
    k = (rng.standard_normal((N, Hkv, D)) * 0.8).astype(x_dtype)
    v = (rng.standard_normal((N, Hkv, D)) * 0.8).astype(x_dtype)
    k[0, 0, 0] = 100.0  # clamps to 127
    slots = rng.permutation(nb * ps)[:N].astype(slot_dtype)
    slots[3] = -1  # padding: skipped
    ek, ev, _, _ = ref_append(k, v, slots, kc, vc, ks, vs, layout)
    kvq.append(k, v, slots, kc, vc, k_scale=ks, v_scale=vs, layout=layout)
    np.testing.assert_array_equal(kc, ek)
    np.testing.assert_array_equal(vc, ev)
    assert kc.max() == 127


@pytest.mark.parametrize("layout", ["HND", "NHD"])
def test_append_per_token_writes_scales(layout):
    rng = np.random.default_rng(2)
    nb, Hkv, ps, D, N = 5, 3, 4, 8, 11
    kc, vc = empty_cache(nb, Hkv, ps, D, layout)
    ks = np.zeros(per_token_shape(nb, Hkv, ps, layout), np.float32)
    vs = np.zeros(per_token_shape(nb, Hkv, ps, layout), np.float32)
    k = rng.standard_normal((N, Hkv, D)).astype(np.float32)
    v = rng.standard_normal((N, Hkv, D)).astype(np.float32)
    k[2] = 0.0  # an all-zero token: scale 1e-8, values 0
    slots = rng.permutation(nb * ps)[:N].astype(np.int64)
    ek, ev, eks, evs = ref_append(k, v, slots, kc, vc, ks, vs, layout)
    kvq.append(k, v, slots, kc, vc, k_scale=ks, v_scale=vs, layout=layout)
    np.testing.assert_array_equal(kc, ek)
    np.testing.assert_array_equal(vc, ev)
    np.testing.assert_array_equal(ks, eks)
    np.testing.assert_array_equal(vs, evs)
    blk, off = int(slots[2]) // ps, int(slots[2]) % ps
    assert (ks[blk, :, off] if layout == "HND" else ks[blk, off, :]) == pytest.approx(1e-8)


def test_append_then_prefill_end_to_end():
    # Writes through append, reads through paged_prefill: error vs unquantized K/V is quantization's.
    rng = np.random.default_rng(3)
    Hq, Hkv, D, ps, L = 4, 2, 32, 8, 19
    nb = 4
    kc, vc = empty_cache(nb, Hkv, ps, D, "HND")
    k = rng.standard_normal((L, Hkv, D)).astype(np.float32)
    v = rng.standard_normal((L, Hkv, D)).astype(np.float32)
    ks, vs = kvq.calibrate(k), kvq.calibrate(v)
    table = np.array([[2, 0, 3, -1]], np.int32)
    slots = np.array([table[0, j // ps] * ps + j % ps for j in range(L)], np.int64)
    kvq.append(k, v, slots, kc, vc, k_scale=ks, v_scale=vs)
    q = rng.standard_normal((L, Hq, D)).astype(np.float16)
    out = kvq.paged_prefill(q, kc, vc, table, np.array([0, L], np.int32), np.array([L], np.int32), k_scale=ks,
                            v_scale=vs)
    from kvq_ref import ref_attention
    ref, _ = ref_attention(q, [k.astype(np.float64)], [v.astype(np.float64)], [0, L], [L], num_kv_heads=Hkv)
    rel = np.linalg.norm(out.astype(np.float64) - ref) / np.linalg.norm(ref)
    assert rel < 3e-2, rel


@pytest.mark.parametrize("x_dtype", [np.float16, np.float32])
def test_calibrate(x_dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((37, 3, 16)).astype(x_dtype)
    x[:, 1, 5] = 0.0  # amax 0: the 1e-5 floor
    s = kvq.calibrate(x)
    assert s.shape == (3, 16) and s.dtype == np.float32
    np.testing.assert_array_equal(s, calibrate_scale(x))
    assert s[1, 5] == np.float32(1e-5)
    out = np.empty((3, 16), np.float32)
    assert kvq.calibrate(x, out=out) is out
    np.testing.assert_array_equal(out, s)


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("mode", ["per_channel", "per_token"])
def test_dequantize_blocks_full_and_compact(layout, mode):
    c = PagedCase(3, 4, 2, 16, 4, q_lens=[1, 1, 1], kv_lens=[5, 0, 9], layout=layout, k_mode=mode, seed=5)
    # Full mode: referenced blocks at their own ids, the rest untouched.
    out = np.full(c.k_cache.shape, np.float16(-3.0))
    res = kvq.dequantize_blocks(c.k_cache, c.k_scale, c.block_tables, c.kv_lens, out=out, layout=layout)
    assert res is out
    referenced = set()
    for b in range(c.B):
        n = -(-int(c.kv_lens[b]) // c.ps)
        referenced.update(int(x) for x in c.block_tables[b, :n])
    for blk in range(c.num_blocks):
        if blk in referenced:
            np.testing.assert_allclose(out[blk].astype(np.float64), ref_dequant_block(c.k_cache, c.k_scale, blk, layout),
                                       rtol=1e-3, atol=1e-6)
        else:
            assert np.all(out[blk] == np.float16(-3.0)), f"block {blk} is not referenced but was written"
    # Compact mode: blocks renumbered in (sequence, block) order, unused entries -1.
    cout, ctable = kvq.dequantize_blocks(c.k_cache, c.k_scale, c.block_tables, c.kv_lens, layout=layout,
                                         compact=True)
    assert cout.shape == (len(referenced),) + c.k_cache.shape[1:] and cout.dtype == np.float16
    assert ctable.shape == c.block_tables.shape and ctable.dtype == np.int32
    k = 0
    for b in range(c.B):
        n = -(-int(c.kv_lens[b]) // c.ps)
        for j in range(c.block_tables.shape[1]):
            if j < n:
                assert ctable[b, j] == k
                np.testing.assert_allclose(cout[k].astype(np.float64),
                                           ref_dequant_block(c.k_cache, c.k_scale, c.block_tables[b, j], layout),
                                           rtol=1e-3, atol=1e-6)
                k += 1
            else:
                assert ctable[b, j] == -1


def test_dequantize_blocks_default_out_is_fp16_for_numpy():
    c = PagedCase(1, 2, 2, 8, 4, q_lens=[1], kv_lens=[3], seed=6)
    out = kvq.dequantize_blocks(c.v_cache, c.v_scale, c.block_tables, c.kv_lens)
    assert out.dtype == np.float16 and out.shape == c.v_cache.shape
    blk = int(c.block_tables[0, 0])
    np.testing.assert_allclose(out[blk].astype(np.float64), ref_dequant_block(c.v_cache, c.v_scale, blk),
                               rtol=1e-3, atol=1e-6)


def test_quantization_primitives_match_reference():
    from kvq import _C
    rng = np.random.default_rng(7)
    xs = rng.standard_normal(200).astype(np.float32) * 3
    for x in xs[:50]:
        assert _C.quantize_value(float(x), 0.02) == int(quantize(x, np.float32(0.02)))
    assert _C.quantize_value(2.5, 1.0) == 2 and _C.quantize_value(3.5, 1.0) == 4  # round half even
    assert _C.quantize_value(1e6, 1.0) == 127 and _C.quantize_value(-1e6, 1.0) == -128
    assert _C.per_token_scale(0.0) == pytest.approx(1e-8)
    assert _C.per_token_scale(12.7) == pytest.approx(float(per_token_scale(12.7)))
