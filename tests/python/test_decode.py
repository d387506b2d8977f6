"""kvq.paged_decode on numpy inputs (CPU backend) against the fp64 reference."""
import numpy as np
import pytest

import kvq
from kvq_ref import PagedCase, assert_close_attention, assert_close_lse, ref_attention


def decode_case(kv_lens, *, Hq=8, Hkv=2, D=32, ps=5, seed=0, **kw):
    return PagedCase(len(kv_lens), Hq, Hkv, D, ps, q_lens=[1] * len(kv_lens), kv_lens=kv_lens, seed=seed, **kw)


def decode_ref(c, **kw):
    return ref_attention(c.q, c.dense_k(), c.dense_v(), c.cu_q_lens, c.kv_lens, num_kv_heads=c.Hkv, **kw)


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("gqa_layout", ["AABB", "ABAB"])
@pytest.mark.parametrize("k_mode,v_mode", [("per_channel", "per_channel"), ("per_token", "per_token"),
                                           ("per_channel", "per_token")])
def test_decode_matches_reference(layout, gqa_layout, k_mode, v_mode):
    c = decode_case([4, 5, 6, 1, 23], layout=layout, k_mode=k_mode, v_mode=v_mode, seed=2)
    out, lse = kvq.paged_decode(c.q, c.k_cache, c.v_cache, c.block_tables, c.kv_lens, k_scale=c.k_scale,
                                v_scale=c.v_scale, layout=layout, gqa_layout=gqa_layout, return_lse=True)
    ref, ref_lse = decode_ref(c, gqa_layout=gqa_layout)
    assert out.shape == c.q.shape and out.dtype == np.float16
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
    assert_close_lse(lse, ref_lse, c.B)


def test_decode_empty_sequence_gives_zeros():
    c = decode_case([3, 0, 7], seed=3)
    out, lse = kvq.paged_decode(c.q, c.k_cache, c.v_cache, c.block_tables, c.kv_lens, k_scale=c.k_scale,
                                v_scale=c.v_scale, return_lse=True)
    assert np.all(out[1] == 0) and np.all(np.isneginf(lse[1]))
    ref, ref_lse = decode_ref(c)
    for b in (0, 2):
        rel = np.linalg.norm(out[b].astype(np.float64) - ref[b]) / np.linalg.norm(ref[b])
        assert rel <= 1e-2


@pytest.mark.parametrize("local_window,global_window", [(2, 0), (3, 2)])
def test_decode_sliding_window(local_window, global_window):
    c = decode_case([9, 14, 3], seed=4)
    out = kvq.paged_decode(c.q, c.k_cache, c.v_cache, c.block_tables, c.kv_lens, k_scale=c.k_scale,
                           v_scale=c.v_scale, local_window=local_window, global_window=global_window)
    ref, _ = decode_ref(c, local_window=local_window, global_window=global_window)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)


def test_decode_out_given_cu_kv_lens_and_check():
    c = decode_case([4, 11], seed=5)
    out = np.full(c.q.shape, np.float16(3.0))
    res = kvq.paged_decode(c.q, c.k_cache, c.v_cache, c.block_tables, k_scale=c.k_scale, v_scale=c.v_scale,
                           cu_kv_lens=c.cu_kv_lens, out=out, check=True, softmax_scale=0.1)
    assert res is out
    ref, _ = decode_ref(c, softmax_scale=0.1)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)


def test_decode_non_contiguous_q():
    c = decode_case([6, 2, 9], seed=6)
    big = np.zeros((c.B, c.Hq, 3 * c.D), np.float16)
    big[:, :, c.D:2 * c.D] = c.q
    out = kvq.paged_decode(big[:, :, c.D:2 * c.D], c.k_cache, c.v_cache, c.block_tables, c.kv_lens,
                           k_scale=c.k_scale, v_scale=c.v_scale)
    ref, _ = decode_ref(c)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)


def test_decode_equals_prefill_of_one_token():
    c = decode_case([5, 8, 13], seed=7)
    d = kvq.paged_decode(c.q, c.k_cache, c.v_cache, c.block_tables, c.kv_lens, k_scale=c.k_scale,
                         v_scale=c.v_scale)
    p = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                          v_scale=c.v_scale)
    np.testing.assert_allclose(d.astype(np.float32), p.astype(np.float32), atol=2e-3, rtol=2e-3)


def test_decode_fp16_cache():
    c = decode_case([5, 8], kv_dtype=np.float16, seed=8)
    out = kvq.paged_decode(c.q, c.k_cache, c.v_cache, c.block_tables, c.kv_lens)
    ref, _ = decode_ref(c)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
