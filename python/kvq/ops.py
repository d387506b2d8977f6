"""The native kvq API over any DLPack tensors (torch, numpy, cupy).

Shapes and dtypes (docs/design.md §2):
  q             [T, Hq, D] bf16/fp16 (prefill; T = total tokens, rows past cu_q_lens[-1] are padding)
                [B, Hq, D] bf16/fp16 (decode); int8 with q_scale [T, Hq] fp32 (prefill, int8 compute)
  k_cache/v_cache  int8 (or bf16/fp16 without scales)
                HND [num_blocks, Hkv, page_size, D] (default) / NHD [num_blocks, page_size, Hkv, D]
  k_scale/v_scale  fp32/bf16/fp16, per-channel [Hkv, D] or per-token HND [num_blocks, Hkv, page_size]
                / NHD [num_blocks, page_size, Hkv]
  block_tables  [B, max_blocks_per_seq] int32 (entries past ceil(kv_len/page_size) are never read)
  cu_q_lens     [B+1] int32;  kv_lens [B] int32 (or cu_kv_lens [B+1], mojo_opset's cumulative form)
  out           like q, q's float dtype (bf16 for int8 q); allocated with q's library when absent
  lse           [T, Hq] fp32, natural log, -inf for rows that see no key (return_lse=True)

torch tensors go through the torch.library ops ``torch.ops.kvq.*`` (torch.compile, CUDA graphs);
everything else calls the extension directly. CPU tensors run the CPU backend, CUDA tensors the CUDA
backend on the current stream of their library.
"""
from __future__ import annotations

import os

from . import _arrays
from ._arrays import Context, require_array
# The extension calls live in _native (shared with the torch ops of _torch_ops, which import only it).
from ._native import (  # noqa: F401 - re-exported: cuda_built, cuda_available, fast_head_dims are kvq.*
    _append_impl,
    _calibrate_impl,
    _decode_impl,
    _dequant_impl,
    _plan_prefill_impl,
    _prefill_impl,
    cuda_available,
    cuda_built,
    fast_head_dims,
)


# docs/design.md §3: the device-data checks are on by default in debug mode (environment KVQ_DEBUG=1);
# never in PagedPrefill.run, which must stay capturable in CUDA graphs.
_DEBUG = os.environ.get("KVQ_DEBUG", "") not in ("", "0")


def _check(check):
    return bool(check) or _DEBUG

def _window(w, absent):
    return absent if w is None else int(w)


def _float_out_dtype(q):
    name = _arrays.dtype_name(q)
    return "bfloat16" if name == "int8" else name


# Set by enable_torch() once the torch.library ops are registered: the torch module and torch.ops.kvq.
# Module globals (not imports inside the functions) keep the torch path traceable by torch.compile.
_torch = None
_tops = None


def enable_torch() -> bool:
    """Register the torch.library ops (torch >= 2.4) and route torch tensors through them."""
    global _torch, _tops
    from . import _torch_ops as t

    if t.available():
        _torch = _arrays.torch_module()
        _tops = _torch.ops.kvq
    return _tops is not None


def _is_torch(x) -> bool:
    return _torch is not None and isinstance(x, _torch.Tensor)


def _torch_empty(shape, dtype, like):
    return _torch.empty(shape, dtype=dtype, device=like.device)


def _torch_lengths(kv_lens, cu_kv_lens, func, check=False):
    if kv_lens is not None and cu_kv_lens is not None:
        raise ValueError(f"{func}: cu_kv_lens: expected kv_lens [B] or cu_kv_lens [B+1], got both")
    if cu_kv_lens is not None:
        if cu_kv_lens.dim() != 1 or cu_kv_lens.shape[0] < 1:
            raise ValueError(f"{func}: cu_kv_lens: expected a 1-D cumulative [batch_size + 1] tensor, got shape "
                             f"{list(cu_kv_lens.shape)}")
        return _fit_int32(cu_kv_lens[1:] - cu_kv_lens[:-1], func, "cu_kv_lens", _check(check))
    if kv_lens is None:
        raise ValueError(f"{func}: kv_lens: expected kv_lens [B] int32 (or cu_kv_lens= [B+1]), got None")
    return kv_lens


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1


def _fit_int32(x, func, arg, check):
    """Integer lengths x as int32 without wrapping (2^32 + 7 must not become 7). Values outside int32
    raise ValueError wherever that needs no device sync (CPU arrays), and with check=True (or
    KVQ_DEBUG=1) on CUDA too; otherwise (CUDA, check=False: graph-capturable) they saturate to the
    int32 range, which the kernels then clamp to the block table (docs/api.md "Hostile metadata")."""
    if _arrays.dtype_name(x) == "int32":
        return x
    lib = _arrays.library_of(x)
    if lib == "torch":
        torch = _arrays.torch_module()
        if x.is_floating_point():
            return x.to(torch.int32)
        if not x.is_cuda or check:
            bad = (x < _INT32_MIN) | (x > _INT32_MAX)
            if bool(bad.any()):
                i = int(torch.nonzero(bad.reshape(-1))[0][0])
                raise ValueError(f"{func}: {arg}: expected lengths that fit in int32, got {int(x.reshape(-1)[i])} "
                                 f"at index {i}")
        return x.clamp(_INT32_MIN, _INT32_MAX).to(torch.int32)
    if hasattr(x, "astype") and hasattr(x, "dtype") and getattr(x.dtype, "kind", "i") in "iu":
        on_device = _arrays.on_cuda(x)
        if not on_device or check:
            bad = (x < _INT32_MIN) | (x > _INT32_MAX)
            if bool(bad.any()):
                i = int(bad.reshape(-1).nonzero()[0][0])
                raise ValueError(f"{func}: {arg}: expected lengths that fit in int32, got {int(x.reshape(-1)[i])} "
                                 f"at index {i}")
        if lib == "cupy":
            import cupy as xp
        else:
            import numpy as xp
        return xp.clip(x, _INT32_MIN, _INT32_MAX).astype("int32")
    return _arrays.to_int32(x, func, arg)


def _diff_int32(cu, func, arg, check):
    """cu [B+1] cumulative (any integer dtype) -> lengths [B] int32, differenced in cu's dtype first and
    checked / saturated by _fit_int32 (no wrap)."""
    require_array(cu, func, arg)
    if len(cu.shape) != 1 or cu.shape[0] < 1:
        raise ValueError(f"{func}: {arg}: expected a 1-D cumulative [batch_size + 1] tensor, got shape "
                         f"{list(cu.shape)}")
    return _fit_int32(cu[1:] - cu[:-1], func, arg, check)


def _resolve_kv_lens(kv_lens, cu_kv_lens, func, check=False):
    if kv_lens is not None and cu_kv_lens is not None:
        raise ValueError(f"{func}: cu_kv_lens: expected kv_lens [B] or cu_kv_lens [B+1], got both")
    if cu_kv_lens is not None:
        return _diff_int32(cu_kv_lens, func, "cu_kv_lens", _check(check))
    if kv_lens is None:
        raise ValueError(f"{func}: kv_lens: expected kv_lens [B] int32 (or cu_kv_lens= [B+1]), got None")
    return kv_lens


def paged_prefill(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens=None, *, k_scale=None, v_scale=None,
                  causal=True, softmax_scale=None, layout="HND", gqa_layout="AABB", local_window=None,
                  global_window=None, mask=None, out=None, return_lse=False, path="auto", check=False,
                  q_scale=None, compute="bf16", cu_kv_lens=None):
    """Paged attention of a varlen batch of query chunks over an (int8) paged KV cache.

    Args:
      q: [T, Hq, D] bf16/fp16 (or int8 with ``q_scale`` [T, Hq] fp32, which implies compute="int8").
      k_cache, v_cache: int8 (or bf16/fp16) pages, ``layout`` "HND" [num_blocks, Hkv, page_size, D]
        or "NHD" [num_blocks, page_size, Hkv, D].
      block_tables: [B, max_blocks_per_seq] int32.
      cu_q_lens: [B+1] int32 cumulative query lengths.
      kv_lens: [B] int32 total keys per sequence (cached prefix + this chunk). Or pass mojo_opset's
        cumulative ``cu_kv_lens=`` [B+1] instead.
      k_scale, v_scale: per-channel [Hkv, D] or per-token scales (fp32/bf16/fp16); None for bf16/fp16 caches.
      causal: bottom-right aligned causal mask (query i of a chunk sits at kv_len - q_len + i).
      softmax_scale: default 1/sqrt(D).
      gqa_layout: "AABB" (kv head = h // group) or "ABAB" (kv head = h % Hkv).
      local_window, global_window: sliding window (causal only): key j visible when
        p - j <= local_window or j < global_window.
      mask: non-causal only: bool/uint8 flattened per-sequence [q_len, kv_len] masks (True = visible).
      out: [T, Hq, D]; allocated (q's library and device) when None.
      return_lse: also return lse [T, Hq] fp32.
      path: "auto", "fused", "dequant" or "generic" (CUDA prefill kernels).
      check: also validate device data (block ids, lengths, monotonic cu_q_lens).
      compute: "bf16" (native, tensor cores in q's dtype) or "int8" (SageAttention-style).

    Returns:
      out, or (out, lse) when return_lse.
    """
    func = "paged_prefill"
    opts = (bool(causal), float(softmax_scale or 0.0), str(layout), str(gqa_layout), _window(local_window, -1),
            _window(global_window, 0), str(compute), str(path), _check(check))
    if _is_torch(q):
        kv_lens = _torch_lengths(kv_lens, cu_kv_lens, func, check)
        if out is None:
            out = _torch_empty(q.shape, _torch.bfloat16 if q.dtype == _torch.int8 else q.dtype, q)
        lse = _torch_empty(q.shape[:2], _torch.float32, q) if return_lse else None
        _tops.paged_prefill(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale, mask,
                            out, lse, *opts)
        return (out, lse) if return_lse else out
    kv_lens = _resolve_kv_lens(kv_lens, cu_kv_lens, func, check)
    require_array(q, func, "q")
    mask = _arrays.bool_as_uint8(mask)
    ctx = Context(q)
    if out is None:
        out = ctx.empty(q.shape, _float_out_dtype(q), func, "out")
    lse = ctx.empty(q.shape[:2], "float32", func, "lse") if return_lse else None
    _prefill_impl(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale, mask, out, lse,
                  *opts)
    return (out, lse) if return_lse else out


def paged_decode(q, k_cache, v_cache, block_tables, kv_lens=None, *, k_scale=None, v_scale=None,
                 softmax_scale=None, layout="HND", gqa_layout="AABB", local_window=None, global_window=None,
                 out=None, return_lse=False, check=False, num_splits=0, cu_kv_lens=None):
    """Attention of one query token per sequence (decode) over the paged cache.

    Args:
      q: [B, Hq, D] bf16/fp16; the query of sequence b sits at position kv_lens[b] - 1.
      k_cache, v_cache, k_scale, v_scale, block_tables, layout, gqa_layout, windows: as paged_prefill.
      kv_lens: [B] int32 (or cu_kv_lens= [B+1] cumulative).
      out: [B, Hq, D] (allocated when None); return_lse: also return lse [B, Hq] fp32.
      num_splits: split-KV factor, 0 = chosen by the planner (CUDA).

    Returns:
      out, or (out, lse) when return_lse.
    """
    func = "paged_decode"
    opts = (float(softmax_scale or 0.0), str(layout), str(gqa_layout), _window(local_window, -1),
            _window(global_window, 0), _check(check), int(num_splits))
    if _is_torch(q):
        kv_lens = _torch_lengths(kv_lens, cu_kv_lens, func, check)
        if out is None:
            out = _torch_empty(q.shape, q.dtype, q)
        lse = _torch_empty(q.shape[:2], _torch.float32, q) if return_lse else None
        _tops.paged_decode(q, k_cache, v_cache, block_tables, kv_lens, k_scale, v_scale, out, lse, *opts)
        return (out, lse) if return_lse else out
    kv_lens = _resolve_kv_lens(kv_lens, cu_kv_lens, func, check)
    require_array(q, func, "q")
    ctx = Context(q)
    if out is None:
        out = ctx.empty(q.shape, _float_out_dtype(q), func, "out")
    lse = ctx.empty(q.shape[:2], "float32", func, "lse") if return_lse else None
    _decode_impl(q, k_cache, v_cache, block_tables, kv_lens, k_scale, v_scale, out, lse, *opts)
    return (out, lse) if return_lse else out


def append(k, v, slot_mapping, k_cache, v_cache, *, k_scale=None, v_scale=None, layout="HND", check=False):
    """Quantize new tokens and write them into the paged cache, in place.

    Args:
      k, v: [N, Hkv, D] bf16/fp16/fp32 new keys/values.
      slot_mapping: [N] int32/int64; token n goes to block slot // page_size, offset slot % page_size;
        slot < 0 skips the token (padding).
      k_cache, v_cache: int8 pages (written). k_scale/v_scale: per-channel [Hkv, D] scales are read;
        per-token scales (shape [num_blocks, Hkv, page_size] HND / [num_blocks, page_size, Hkv] NHD)
        are computed as max(amax/127, 1e-8) and written.
      check: also check slots < num_blocks * page_size (reads slot_mapping on the device).
    """
    if _is_torch(k_cache):
        _tops.append(k, v, slot_mapping, k_cache, v_cache, k_scale, v_scale, str(layout), _check(check))
        return
    require_array(k_cache, "append", "k_cache")
    _append_impl(k, v, slot_mapping, k_cache, v_cache, k_scale, v_scale, str(layout), _check(check))


def _num_referenced_blocks(block_tables, kv_lens, page_size):
    lens = _arrays.host_list(kv_lens, "dequantize_blocks", "kv_lens")
    width = int(block_tables.shape[1]) if len(block_tables.shape) == 2 else 0
    return sum(min(width, -(-max(n, 0) // page_size)) for n in lens)


def dequantize_blocks(cache, scale, block_tables, kv_lens, *, out=None, layout="HND", compact=False,
                      out_dtype="bfloat16", num_out_blocks=None, check=False):
    """Dequantize the blocks referenced by (block_tables, kv_lens) of one int8 cache.

    Full mode (compact=False): out has the cache's shape; referenced blocks are written at their own
    ids, the others are left as they were (allocated out: uninitialized). Compact mode: out is
    [num_out_blocks, ...] and the call returns (out, out_block_tables [B, max_blocks_per_seq] int32),
    the referenced blocks renumbered in (sequence, block) order, unused entries -1.
    num_out_blocks defaults to sum ceil(kv_len/page_size) (reads kv_lens on the host).
    out_dtype: "bfloat16" or "float16" when out is allocated (numpy: "float16").
    """
    func = "dequantize_blocks"
    require_array(cache, func, "cache")
    ctx = Context(cache)
    if out_dtype == "bfloat16" and ctx.lib in ("numpy", "cupy"):
        out_dtype = "float16"
    out_block_tables = None
    if compact:
        require_array(block_tables, func, "block_tables")
        if len(cache.shape) != 4:
            raise ValueError(f"{func}: cache: expected [num_blocks, ., ., head_dim] (4-D), got shape "
                             f"{list(cache.shape)}")
        page_size = int(cache.shape[2] if str(layout).upper() == "HND" else cache.shape[1])
        if out is None:
            if num_out_blocks is None:
                num_out_blocks = _num_referenced_blocks(block_tables, kv_lens, page_size)
            out = ctx.empty((int(num_out_blocks),) + tuple(cache.shape[1:]), out_dtype, func, "out")
        out_block_tables = ctx.empty(block_tables.shape, "int32", func, "out_block_tables")
    elif out is None:
        out = ctx.empty(cache.shape, out_dtype, func, "out")
    args = (cache, scale, block_tables, kv_lens, out, out_block_tables, str(layout), _check(check))
    if _is_torch(cache):
        _tops.dequantize_blocks(*args)
    else:
        _dequant_impl(*args)
    return (out, out_block_tables) if compact else out


def calibrate(x, *, out=None):
    """Per-channel scales of a K or V sample x [num_tokens, Hkv, D]: max(amax over tokens / 127, 1e-5),
    returned as [Hkv, D] fp32 (in x's library and device)."""
    func = "calibrate"
    if _is_torch(x):
        if out is None:
            if x.dim() != 3:
                raise ValueError(f"{func}: x: expected [num_tokens, num_kv_heads, head_dim], got shape "
                                 f"{list(x.shape)}")
            out = _torch_empty(x.shape[1:], _torch.float32, x)
        _tops.calibrate_out(x, out)
        return out
    require_array(x, func, "x")
    if out is None:
        if len(x.shape) != 3:
            raise ValueError(f"{func}: x: expected [num_tokens, num_kv_heads, head_dim], got shape {list(x.shape)}")
        out = Context(x).empty(x.shape[1:], "float32", func, "out")
    _calibrate_impl(x, out)
    return out


class PagedPrefill:
    """Plan once from host-side lengths, then run without host syncs or allocations (CUDA graphs).

        pp = kvq.PagedPrefill(causal=True, layout="HND")
        pp.plan(cu_q_lens_host, kv_lens_host, q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens,
                k_scale=k_scale, v_scale=v_scale)
        out = torch.empty_like(q)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            pp.run(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale=k_scale, v_scale=v_scale,
                   out=out)

    plan() computes kvq::plan_prefill from the host lengths (lists or CPU arrays; None = upper bounds,
    valid for any lengths that fit the tensors) and allocates the workspace once, on q's device.
    When a captured graph is replayed with other lengths, plan with the largest ones, or with None.
    run() takes the same tensors (same shapes and dtypes as planned) and calls the kernel on the current
    stream; it allocates only out/lse when they are not given.
    """

    def __init__(self, *, causal=True, softmax_scale=None, layout="HND", gqa_layout="AABB", local_window=None,
                 global_window=None, compute="bf16", path="auto", check=False):
        self.causal = bool(causal)
        self.softmax_scale = softmax_scale
        self.layout = str(layout)
        self.gqa_layout = str(gqa_layout)
        self.local_window = _window(local_window, -1)
        self.global_window = _window(global_window, 0)
        self.compute = str(compute)
        self.path = str(path)
        self.check = bool(check)
        self.plan_info = None
        self.workspace = None

    def _common(self):
        return dict(causal=self.causal, softmax_scale=(float(self.softmax_scale) if self.softmax_scale else None),
                    layout=self.layout, gqa_layout=self.gqa_layout, local_window=self.local_window,
                    global_window=self.global_window, compute=self.compute, path=self.path)

    def plan(self, cu_q_lens_host, kv_lens_host, q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, *,
             k_scale=None, v_scale=None, q_scale=None, mask=None, return_lse=False):
        """Plan for these tensors' shapes/dtypes and these host lengths; returns the kvq.PrefillPlan."""
        func = "PagedPrefill.plan"
        require_array(q, func, "q")
        ctx = Context(q)
        mask = _arrays.bool_as_uint8(mask)
        lse = ctx.empty(q.shape[:2], "float32", func, "lse") if return_lse else None
        out = ctx.empty(q.shape, _float_out_dtype(q), func, "out")
        info = _plan_prefill_impl(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale,
                                  mask, out, lse, cu_q_lens_host, kv_lens_host, func=func, **self._common())
        self.plan_info = info
        self.workspace = ctx.empty((max(int(info.workspace_bytes), 1),), "uint8", func, "workspace")
        return info

    def run(self, q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, *, k_scale=None, v_scale=None,
            q_scale=None, mask=None, out=None, lse=None, return_lse=False):
        """Run the planned prefill: out, or (out, lse) when return_lse or lse= is given."""
        func = "PagedPrefill.run"
        if self.plan_info is None:
            raise ValueError(f"{func}: plan: expected plan() to have been called, got no plan")
        require_array(q, func, "q")
        ctx = Context(q)
        if out is None:
            out = ctx.empty(q.shape, _float_out_dtype(q), func, "out")
        if lse is None and return_lse:
            lse = ctx.empty(q.shape[:2], "float32", func, "lse")
        c = self._common()
        mask = _arrays.bool_as_uint8(mask)
        _prefill_impl(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale, mask, out,
                      lse, c["causal"], c["softmax_scale"], c["layout"], c["gqa_layout"], c["local_window"],
                      c["global_window"], c["compute"], c["path"], self.check, plan=self.plan_info,
                      workspace=self.workspace, func=func)
        return (out, lse) if lse is not None else out


Plan = PagedPrefill

