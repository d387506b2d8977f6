"""Hostile metadata in the Python layer: mojo.slot_mapping refuses positions
past the block table instead of clamping them onto the last block, and int64 lengths that do not fit
in int32 raise instead of wrapping (2^32 + 7 must not become 7). numpy inputs: the CPU backend."""
import numpy as np
import pytest

import kvq
from kvq.compat import mojo
from kvq_ref import PagedCase


def test_slot_mapping_past_the_table_raises():
    # Table [[5, 7]], page 4, prefix 6, four new tokens -> positions 6..9; 8 and 9
    # have no block. Clamped, they landed on slots 28 and 29: cached tokens 4 and 5 of the sequence.
    bt = np.array([[5, 7]], np.int32)
    with pytest.raises(ValueError, match=r"mojo\.slot_mapping: prefix_lens: .* = 8, got position 8 for token 2"):
        mojo.slot_mapping(bt, np.array([0, 4]), np.array([6]), 4, 4)


def test_slot_mapping_inside_the_table_is_unchanged():
    bt = np.array([[5, 7]], np.int32)
    np.testing.assert_array_equal(mojo.slot_mapping(bt, np.array([0, 2]), np.array([6]), 2, 4), [30, 31])
    # A padded sequence (prefix -1) is skipped, never checked against its table.
    np.testing.assert_array_equal(mojo.slot_mapping(bt, np.array([0, 3]), np.array([-1]), 3, 4), [-1, -1, -1])


def test_store_kv_cache_past_the_table_writes_nothing():
    Hkv, D, ps = 1, 8, 4
    kc = np.zeros((8, Hkv, ps, D), np.int8)
    vc = np.zeros_like(kc)
    k = np.ones((4, Hkv, D), np.float16)
    s = np.full((Hkv, D), 0.01, np.float32)
    before = kc.copy()
    with pytest.raises(ValueError, match="past its block table"):
        mojo.store_kv_cache(k, k, kc, vc, s, s, np.array([[5, 7]], np.int32), np.array([0, 4]), np.array([6]))
    np.testing.assert_array_equal(kc, before)


def _prefill_case():
    return PagedCase(1, 4, 2, 16, 4, q_lens=[2], kv_lens=[7], seed=3)


def test_paged_prefill_cu_kv_lens_int64_overflow_raises():
    c = _prefill_case()
    cu_kv = np.array([0, 2 ** 32 + 7], np.int64)  # wraps to 7 in int32: a plausible length
    with pytest.raises(ValueError, match=r"paged_prefill: cu_kv_lens: expected lengths that fit in int32, got 4294967303"):
        kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, cu_kv_lens=cu_kv,
                          k_scale=c.k_scale, v_scale=c.v_scale)


def test_paged_prefill_cu_kv_lens_int64_in_range_works():
    c = _prefill_case()
    out64 = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens,
                              cu_kv_lens=np.array([0, 7], np.int64), k_scale=c.k_scale, v_scale=c.v_scale)
    out32 = kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                              k_scale=c.k_scale, v_scale=c.v_scale)
    np.testing.assert_array_equal(out64, out32)


def test_paged_decode_cu_kv_lens_int64_overflow_raises():
    c = PagedCase(1, 4, 2, 16, 4, q_lens=[1], kv_lens=[7], seed=4)
    with pytest.raises(ValueError, match="paged_decode: cu_kv_lens: expected lengths that fit in int32"):
        kvq.paged_decode(c.q, c.k_cache, c.v_cache, c.block_tables, cu_kv_lens=np.array([0, -(2 ** 32) + 7]),
                         k_scale=c.k_scale, v_scale=c.v_scale)


def test_mojo_prefill_int64_lengths_overflow_raise():
    c = _prefill_case()
    with pytest.raises(ValueError, match="mojo.prefill: cu_total_seq_lens: expected lengths that fit in int32"):
        mojo.prefill(c.q, c.k_cache, c.v_cache, c.k_scale, c.v_scale, c.block_tables,
                     c.cu_q_lens.astype(np.int64), np.array([0, 2 ** 32 + 7], np.int64))
    with pytest.raises(ValueError, match="mojo.prefill: cu_seqlens_q: expected lengths that fit in int32"):
        mojo.prefill(c.q, c.k_cache, c.v_cache, c.k_scale, c.v_scale, c.block_tables,
                     np.array([0, 2 ** 32 + 2], np.int64), np.array([0, 7], np.int64))


def test_negative_softmax_scale_raises():
    c = _prefill_case()
    with pytest.raises(ValueError, match="softmax_scale"):
        kvq.paged_prefill(c.q, c.k_cache, c.v_cache, c.block_tables, c.cu_q_lens, c.kv_lens,
                          k_scale=c.k_scale, v_scale=c.v_scale, softmax_scale=-0.5)
