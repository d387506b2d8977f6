"""kvq.paged_prefill / kvq.PagedPrefill on numpy inputs (CPU backend) against the fp64 reference."""
import numpy as np
import pytest

import kvq
from kvq_ref import PagedCase, assert_close_attention, assert_close_lse, ref_attention

SENTINEL = np.float16(7.0)


def run_case(c, *, causal=True, gqa_layout="AABB", local_window=None, global_window=None, masks=None,
             softmax_scale=None, **kw):
    mask = None
    if masks is not None:
        mask = np.concatenate([m.reshape(-1) for m in masks]).astype(np.uint8)
    out, lse = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                                 k_scale=c.k_scale, v_scale=c.v_scale, causal=causal, gqa_layout=gqa_layout,
                                 layout=c.layout, local_window=local_window, global_window=global_window,
                                 mask=mask, softmax_scale=softmax_scale, return_lse=True, **kw)
    ref, ref_lse = ref_attention(c.q, c.dense_k(), c.dense_v(), c.cu_q_lens, c.kv_lens, num_kv_heads=c.Hkv,
                                 causal=causal, gqa_layout=gqa_layout, local_window=local_window,
                                 global_window=global_window, masks=masks, softmax_scale=softmax_scale)
    return out, lse, ref, ref_lse


@pytest.mark.parametrize("layout", ["HND", "NHD"])
@pytest.mark.parametrize("gqa_layout", ["AABB", "ABAB"])
@pytest.mark.parametrize("k_mode,v_mode", [("per_channel", "per_channel"), ("per_token", "per_token"),
                                           ("per_token", "per_channel")])
def test_prefill_matches_reference(layout, gqa_layout, k_mode, v_mode):
    # kv_len around page boundaries (page-1, page, page+1), a prefix, a chunk of one token.
    ps = 7
    c = PagedCase(4, 8, 2, 32, ps, q_lens=[6, 7, 1, 5], kv_lens=[6, 14, 8, 15], layout=layout, k_mode=k_mode,
                  v_mode=v_mode, seed=1)
    out, lse, ref, ref_lse = run_case(c, gqa_layout=gqa_layout)
    assert out.dtype == np.float16 and out.shape == c.q.shape
    assert lse.dtype == np.float32 and lse.shape == c.q.shape[:2]
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
    assert_close_lse(lse, ref_lse, int(c.cu_q_lens[-1]))


@pytest.mark.parametrize("head_dim", [1, 5, 64, 96, 128])
@pytest.mark.parametrize("page_size", [1, 3, 16])
def test_prefill_head_dims_and_page_sizes(head_dim, page_size):
    c = PagedCase(2, 4, 4, head_dim, page_size, q_lens=[3, 4], kv_lens=[5, 4], seed=head_dim * 100 + page_size)
    out, lse, ref, ref_lse = run_case(c)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
    assert_close_lse(lse, ref_lse, int(c.cu_q_lens[-1]))


def test_prefill_non_causal_with_mask_and_empty_rows():
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[3, 2], kv_lens=[5, 6], seed=3)
    rng = np.random.default_rng(4)
    masks = [rng.random((3, 5)) < 0.6, rng.random((2, 6)) < 0.6]
    masks[0][1, :] = False  # a row that sees no key: zeros and lse -inf
    out, lse, ref, ref_lse = run_case(c, causal=False, masks=masks)
    assert np.all(out[1] == 0)
    assert np.all(np.isneginf(lse[1]))
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
    assert_close_lse(lse, ref_lse, int(c.cu_q_lens[-1]))


def test_prefill_non_causal_without_mask():
    c = PagedCase(2, 4, 1, 16, 8, q_lens=[4, 9], kv_lens=[3, 12], seed=5)
    out, lse, ref, ref_lse = run_case(c, causal=False)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)


@pytest.mark.parametrize("local_window,global_window", [(3, 0), (2, 4), (0, 1)])
def test_prefill_sliding_window(local_window, global_window):
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[9, 5], kv_lens=[12, 17], seed=6)
    out, lse, ref, ref_lse = run_case(c, local_window=local_window, global_window=global_window)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
    assert_close_lse(lse, ref_lse, int(c.cu_q_lens[-1]))


def test_prefill_softmax_scale():
    c = PagedCase(1, 2, 2, 16, 4, q_lens=[5], kv_lens=[9], seed=7)
    out, lse, ref, ref_lse = run_case(c, softmax_scale=0.05)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
    assert_close_lse(lse, ref_lse, int(c.cu_q_lens[-1]))


@pytest.mark.parametrize("kv_dtype", [np.float16])
def test_prefill_fp16_cache_without_scales(kv_dtype):
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[3, 4], kv_lens=[6, 4], kv_dtype=kv_dtype, seed=8)
    out, lse, ref, ref_lse = run_case(c)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)


def test_prefill_empty_sequences_and_bucket_padding():
    # The seed's bucket case: 8 token slots, cu_q_lens [0,1,2,3,4,4,4], kv_lens [1,1,1,1,0,0],
    # rows 4-5 of the table all -1: only out[:4] is defined and rows past 4 are never written.
    c = PagedCase(6, 4, 2, 128, 16, q_lens=[1, 1, 1, 1, 0, 0], kv_lens=[1, 1, 1, 1, 0, 0], seed=9, q_pad_rows=4)
    assert c.q.shape[0] == 8 and (c.block_tables[4:] == -1).all()
    out = np.full(c.q.shape, SENTINEL, np.float16)
    res = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                            v_scale=c.v_scale, out=out, check=True)
    assert res is out
    ref, _ = ref_attention(c.q, c.dense_k(), c.dense_v(), c.cu_q_lens, c.kv_lens, num_kv_heads=c.Hkv)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
    assert np.all(out[4:] == SENTINEL), "bucket padding rows were written"


def test_prefill_cu_kv_lens_keyword():
    c = PagedCase(3, 4, 2, 16, 4, q_lens=[2, 3, 1], kv_lens=[5, 3, 9], seed=10)
    a = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, k_scale=c.k_scale,
                          v_scale=c.v_scale, cu_kv_lens=c.cu_kv_lens)
    b = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                          v_scale=c.v_scale)
    np.testing.assert_array_equal(a, b)
    # int64 cumulative lengths are converted too.
    a64 = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, k_scale=c.k_scale,
                            v_scale=c.v_scale, cu_kv_lens=c.cu_kv_lens.astype(np.int64))
    np.testing.assert_array_equal(a64, b)


def test_prefill_non_contiguous_views():
    # q sliced from a bigger array (head and token strides), out a strided view, caches with a padded
    # head dim and scales sliced: strides are honoured, the last dimension is contiguous.
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[3, 5], kv_lens=[7, 5], seed=11)
    T, Hq, D = c.q.shape
    big_q = np.random.default_rng(0).standard_normal((2 * T, Hq + 3, D)).astype(np.float16)
    big_q[::2, 1:1 + Hq] = c.q
    q_view = big_q[::2, 1:1 + Hq]
    assert not q_view.flags.c_contiguous
    big_k = np.zeros(c.k_cache.shape[:-1] + (D + 8,), np.int8)
    big_k[..., 4:4 + D] = c.k_cache
    k_view = big_k[..., 4:4 + D]
    big_out = np.full((T, Hq, 2 * D), SENTINEL, np.float16)
    out_view = big_out[:, :, :D]
    big_scale = np.zeros((c.Hkv, 2 * D), np.float32)
    big_scale[:, D:] = c.k_scale
    res = kvq.paged_prefill(q_view, k_view, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                            k_scale=big_scale[:, D:], v_scale=c.v_scale, out=out_view)
    assert res is out_view
    ref, _ = ref_attention(c.q, c.dense_k(), c.dense_v(), c.cu_q_lens, c.kv_lens, num_kv_heads=c.Hkv)
    assert_close_attention(out_view, ref, c.cu_q_lens, c.B)
    assert np.all(big_out[:, :, D:] == SENTINEL), "wrote outside the out view"
    np.testing.assert_array_equal(q_view, c.q)


def test_prefill_matches_contiguous_bitwise():
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[3, 5], kv_lens=[7, 5], seed=12)
    a = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                          v_scale=c.v_scale)
    big = np.zeros((c.q.shape[0], c.Hq * 2, c.D), np.float16)
    big[:, ::2] = c.q
    b = kvq.paged_prefill(big[:, ::2], c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                          k_scale=c.k_scale, v_scale=c.v_scale)
    np.testing.assert_array_equal(a, b)


def test_prefill_check_true_passes_on_valid_data():
    c = PagedCase(3, 4, 2, 16, 4, q_lens=[2, 3, 4], kv_lens=[5, 3, 9], seed=13)
    out, lse, ref, ref_lse = run_case(c, check=True)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)


def test_prefill_scales_in_fp16():
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[3, 2], kv_lens=[3, 6], seed=14)
    c.k_scale = c.k_scale.astype(np.float16)
    c.v_scale = c.v_scale.astype(np.float16)
    out, lse, ref, ref_lse = run_case(c)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)


def test_paged_prefill_plan_and_run():
    c = PagedCase(3, 4, 2, 16, 4, q_lens=[2, 3, 4], kv_lens=[5, 3, 9], seed=15)
    pp = kvq.PagedPrefill(causal=True)
    plan = pp.plan(c.cu_q_lens.tolist(), c.kv_lens.tolist(), c.q, c.k_cache, c.v_cache, c.block_tables,
                   c.cu_q_lens, c.kv_lens, k_scale=c.k_scale, v_scale=c.v_scale)
    assert isinstance(plan, kvq.PrefillPlan)
    assert plan.batch_size == 3 and plan.total_q == c.q.shape[0]
    assert plan.max_q_len == 4 and plan.max_kv_len == 9
    assert plan.device == "cpu"
    assert plan.kernel == "path"  # the CPU backend serves every call; "mma_decode" is a CUDA plan's choice
    assert "PrefillPlan(" in repr(plan) and "kernel=path" in repr(plan)
    assert plan.mainloop == "none" and plan.decode_variant == "none"  # no tensor-core kernel on the CPU
    assert "mainloop=none" in repr(plan) and "decode_variant=none" in repr(plan)
    out = np.empty_like(c.q)
    res, lse = pp.run(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                      v_scale=c.v_scale, out=out, return_lse=True)
    assert res is out
    ref, ref_lse = ref_attention(c.q, c.dense_k(), c.dense_v(), c.cu_q_lens, c.kv_lens, num_kv_heads=c.Hkv)
    assert_close_attention(out, ref, c.cu_q_lens, c.B)
    assert_close_lse(lse, ref_lse, int(c.cu_q_lens[-1]))
    # Planned from upper bounds (no host lengths).
    plan2 = pp.plan(None, None, c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                    k_scale=c.k_scale, v_scale=c.v_scale)
    assert plan2.max_kv_len >= 9
    res2 = pp.run(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens, k_scale=c.k_scale,
                  v_scale=c.v_scale)
    np.testing.assert_array_equal(res2, out)
    assert kvq.Plan is kvq.PagedPrefill


def test_plan_host_length_errors():
    c = PagedCase(2, 4, 2, 16, 4, q_lens=[2, 3], kv_lens=[5, 3], seed=16)
    pp = kvq.PagedPrefill()
    with pytest.raises(ValueError, match="cu_q_lens_host"):
        pp.plan([0, 2], [5, 3], c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                k_scale=c.k_scale, v_scale=c.v_scale)
    with pytest.raises(ValueError, match="kv_lens_host"):
        pp.plan([0, 2, 5, 6], [5, 3, 1], c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                k_scale=c.k_scale, v_scale=c.v_scale)
    with pytest.raises(ValueError, match="plan"):
        kvq.PagedPrefill().run(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                               k_scale=c.k_scale, v_scale=c.v_scale)
