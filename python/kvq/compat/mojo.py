"""Drop-in functions with mojo_opset's signatures and semantics.

mojo_opset (the Triton operator library kvq started from; its int8-KV paged attention is
mojo_opset PR #361) takes cumulative lengths everywhere
(``cu_seqlens_q``, ``cu_total_seq_lens`` [B+1], a repeated tail for padded batch slots), the scales
right after the caches, an optional pre-quantized query (``query_scale``), ``compute_dtype``
("bf16" or "int8") and ``gqa_layout`` ("AABB": kv head = h // group, "ABAB": kv head = h % Hkv).
Each function below converts to the native API (kvq.paged_prefill etc.) without copying the big
tensors: only the [B+1] cumulative arrays are differenced (on their device, no host sync) and
integer metadata is cast to int32 when it is not already.

The signatures follow mojo_opset's operators and the tests of its PR #361; python/README.md
lists them side by side with the native API.
"""
from __future__ import annotations

from .. import _arrays
from .. import ops as _ops


def _compute_of(compute_dtype, func):
    name = str(compute_dtype).replace("torch.", "").lower()
    if name in ("bf16", "bfloat16", "fp16", "float16", "native"):
        return "bf16"
    if name in ("int8", "i8"):
        return "int8"
    raise ValueError(f"{func}: compute_dtype: expected \"bf16\" or \"int8\", got {compute_dtype!r}")


def _int32(x, func, arg):
    _arrays.require_array(x, func, arg)
    return _arrays.to_int32(x, func, arg)


def prefill(q, k_cache, v_cache, k_scale, v_scale, block_tables, cu_seqlens_q, cu_total_seq_lens, *,
            softmax_scale=None, causal=True, local_window=None, global_window=None, query_scale=None,
            compute_dtype="bf16", gqa_layout="AABB", layout="HND", out=None):
    """mojo_opset-style paged (chunked) prefill. Returns out [T, Hq, D].

    Args:
      q: [T, Hq, D] bf16/fp16, or int8 with query_scale [T, Hq] fp32.
      k_cache, v_cache: int8 [num_blocks, Hkv, block_size, D] (layout "HND"; "NHD" also accepted).
      k_scale, v_scale: per-(kv head, channel) [Hkv, D] scales, bf16/fp16/fp32 (mojo_opset stores bf16).
      block_tables: [B, max_blocks] int32/int64, unused entries -1.
      cu_seqlens_q: [B+1] cumulative query lengths of this chunk.
      cu_total_seq_lens: [B+1] cumulative total lengths (cached prefix + this chunk).
      softmax_scale: default 1/sqrt(D). causal: bottom-right aligned.
      local_window, global_window: sliding window (e.g. global 4, local 255).
      query_scale: scales of an int8 q. compute_dtype: "bf16" or "int8".
      gqa_layout: "AABB" or "ABAB".
    Native equivalent: kvq.paged_prefill(q, k_cache, v_cache, block_tables, cu_seqlens_q,
      cu_kv_lens=cu_total_seq_lens, k_scale=k_scale, v_scale=v_scale, q_scale=query_scale, compute=...).
    """
    func = "mojo.prefill"
    check = _ops._check(False)
    kv_lens = _ops._diff_int32(cu_total_seq_lens, func, "cu_total_seq_lens", check)
    _arrays.require_array(cu_seqlens_q, func, "cu_seqlens_q")
    return _ops.paged_prefill(q, k_cache, v_cache, _int32(block_tables, func, "block_tables"),
                              _ops._fit_int32(cu_seqlens_q, func, "cu_seqlens_q", check), kv_lens, k_scale=k_scale,
                              v_scale=v_scale, causal=causal, softmax_scale=softmax_scale, layout=layout,
                              gqa_layout=gqa_layout, local_window=local_window, global_window=global_window,
                              out=out, q_scale=query_scale, compute=_compute_of(compute_dtype, func))


def decode(q, k_cache, v_cache, k_scale, v_scale, block_tables, cu_total_seq_lens, *, softmax_scale=None,
           local_window=None, global_window=None, compute_dtype="bf16", gqa_layout="AABB", layout="HND",
           out=None):
    """mojo_opset-style paged decode (one query token per sequence). Returns out [B, Hq, D].

    Args:
      q: [B, Hq, D] bf16/fp16; the token of sequence b is its last one (position seq_len_b - 1).
      cu_total_seq_lens: [B+1] cumulative sequence lengths (including the current token).
      The rest as in prefill. compute_dtype "int8" is not a decode mode in kvq: decode always
      dequantizes int8 K/V exactly to q's dtype (it is memory-bound), so "int8" runs the same kernel.
    Native equivalent: kvq.paged_decode(q, k_cache, v_cache, block_tables, cu_kv_lens=cu_total_seq_lens,
      k_scale=k_scale, v_scale=v_scale).
    """
    func = "mojo.decode"
    _compute_of(compute_dtype, func)
    kv_lens = _ops._diff_int32(cu_total_seq_lens, func, "cu_total_seq_lens", _ops._check(False))
    return _ops.paged_decode(q, k_cache, v_cache, _int32(block_tables, func, "block_tables"), kv_lens,
                             k_scale=k_scale, v_scale=v_scale, softmax_scale=softmax_scale, layout=layout,
                             gqa_layout=gqa_layout, local_window=local_window, global_window=global_window,
                             out=out)


def _raise_past_table(t, seq, pos, block_tables, page_size):
    b, p = int(seq[t]), int(pos[t])
    width = int(block_tables.shape[1])
    raise ValueError(f"mojo.slot_mapping: prefix_lens: expected prefix_lens[b] + new tokens of sequence b <= "
                     f"block_tables.shape[1] * page_size = {width} * {page_size} = {width * page_size}, got position "
                     f"{p} for token {t} of sequence {b} (past its block table: it would overwrite a cached token)")


def slot_mapping(block_tables, cu_seqlens, prefix_lens, num_tokens, page_size):
    """Slots [num_tokens] int64 of new tokens: token t of sequence b (cu_seqlens[b] <= t < cu_seqlens[b+1])
    lands at position prefix_lens[b] + (t - cu_seqlens[b]); -1 (skip) for padded sequences
    (prefix_lens[b] < 0), for tokens past cu_seqlens[-1] and where the block table holds -1. Computed in
    the arrays' library, on their device. A position at or past block_tables.shape[1] * page_size raises
    ValueError (it has no block: writing it anywhere would overwrite a cached token); for device arrays
    that check reads one flag back (a sync)."""
    lib = _arrays.library_of(block_tables)
    if lib == "torch":
        torch = _arrays.torch_module()
        dev = block_tables.device
        cu = cu_seqlens.to(device=dev, dtype=torch.int64)
        prefix = prefix_lens.to(device=dev, dtype=torch.int64)
        t = torch.arange(num_tokens, device=dev, dtype=torch.int64)
        seq = torch.searchsorted(cu, t, right=True) - 1
        batch = cu.shape[0] - 1
        valid = (seq >= 0) & (seq < batch)
        seq_c = seq.clamp(0, max(batch - 1, 0))
        pos = prefix[seq_c] + t - cu[seq_c]
        live = valid & (prefix[seq_c] >= 0)
        past = live & (pos >= int(block_tables.shape[1]) * page_size)
        if bool(past.any()):
            _raise_past_table(int(torch.nonzero(past)[0][0]), seq_c, pos, block_tables, page_size)
        blk_idx = (pos.clamp(min=0) // page_size).clamp(min=0, max=max(block_tables.shape[1] - 1, 0))
        blk = block_tables.to(torch.int64)[seq_c, blk_idx]
        slot = blk * page_size + pos.clamp(min=0) % page_size
        ok = valid & (prefix[seq_c] >= 0) & (blk >= 0)
        return torch.where(ok, slot, torch.full_like(slot, -1))
    import numpy as np

    xp = np
    if lib == "cupy":
        import cupy as xp  # noqa: F811
    cu = xp.asarray(cu_seqlens).astype(xp.int64)
    prefix = xp.asarray(prefix_lens).astype(xp.int64)
    bt = xp.asarray(block_tables).astype(xp.int64)
    t = xp.arange(num_tokens, dtype=xp.int64)
    seq = xp.searchsorted(cu, t, side="right") - 1
    batch = cu.shape[0] - 1
    valid = (seq >= 0) & (seq < batch)
    seq_c = xp.clip(seq, 0, max(batch - 1, 0))
    pos = prefix[seq_c] + t - cu[seq_c]
    live = valid & (prefix[seq_c] >= 0)
    past = live & (pos >= int(bt.shape[1]) * page_size)
    if bool(past.any()):
        _raise_past_table(int(past.nonzero()[0][0]), seq_c, pos, bt, page_size)
    blk_idx = xp.clip(xp.maximum(pos, 0) // page_size, 0, max(bt.shape[1] - 1, 0))
    blk = bt[seq_c, blk_idx]
    slot = blk * page_size + xp.maximum(pos, 0) % page_size
    ok = valid & (prefix[seq_c] >= 0) & (blk >= 0)
    return xp.where(ok, slot, -1).astype(xp.int64)


def store_kv_cache(k, v, k_cache, v_cache, k_scale, v_scale, block_tables, cu_seqlens, prefix_lens, *,
                   layout="HND"):
    """mojo_opset-style cache write: quantize the new tokens of each sequence with the static per-channel
    scales and write them after its cached prefix, in place.

    Args:
      k, v: [N, Hkv, D] new keys/values of all sequences, packed (N >= cu_seqlens[-1]).
      k_cache, v_cache: int8 pages; k_scale, v_scale: [Hkv, D].
      block_tables: [B, max_blocks]; cu_seqlens: [B+1] cumulative new-token counts;
      prefix_lens: [B] tokens already cached per sequence, -1 for a padded sequence (nothing written).
    Native equivalent: kvq.append(k, v, slot_mapping(...), k_cache, v_cache, k_scale=..., v_scale=...).
    """
    func = "mojo.store_kv_cache"
    _arrays.require_array(k, func, "k")
    _arrays.require_array(k_cache, func, "k_cache")
    _arrays.require_array(block_tables, func, "block_tables")
    if len(k_cache.shape) != 4:
        raise ValueError(f"{func}: k_cache: expected [num_blocks, ., ., head_dim] (4-D), got shape "
                         f"{list(k_cache.shape)}")
    page_size = int(k_cache.shape[2] if str(layout).upper() == "HND" else k_cache.shape[1])
    slots = slot_mapping(block_tables, cu_seqlens, prefix_lens, int(k.shape[0]), page_size)
    _ops.append(k, v, slots, k_cache, v_cache, k_scale=k_scale, v_scale=v_scale, layout=layout)
