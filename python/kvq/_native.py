"""The calls into the compiled extension kvq._C, over arrays already shaped by the caller.

Both the public API (ops.py, for non-torch arrays) and the torch.library ops (_torch_ops.py, the
kernels behind torch.ops.kvq.*) call these functions; neither imports the other to reach them.
Each function exports its tensors with DLPack (no copies) on the stream of the first tensor's
library and hands them to _C, which validates, plans and runs the kernel.
"""
from __future__ import annotations

from . import _arrays
from ._arrays import Context

try:
    from . import _C
except ImportError as _e:  # pragma: no cover - reported when an op is called
    _C = None
    _C_IMPORT_ERROR = _e
else:
    _C_IMPORT_ERROR = None


def _lib():
    if _C is None:
        raise ImportError(f"kvq._C (the compiled extension) could not be imported: {_C_IMPORT_ERROR}")
    return _C


def _prefill_impl(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale, mask,
                  out, lse, causal, softmax_scale, layout, gqa_layout, local_window, global_window, compute,
                  path, check, plan=None, workspace=None, func="paged_prefill"):
    ctx = Context(q)
    e = ctx.export
    _lib().paged_prefill(
        func=func, q=e(q), k_cache=e(k_cache), v_cache=e(v_cache), block_tables=e(block_tables),
        cu_q_lens=e(cu_q_lens), kv_lens=e(kv_lens), k_scale=e(k_scale), v_scale=e(v_scale),
        q_scale=e(q_scale), mask=e(mask), out=e(out), lse=e(lse), causal=bool(causal),
        softmax_scale=(None if not softmax_scale else float(softmax_scale)), layout=layout,
        gqa_layout=gqa_layout, local_window=local_window, global_window=global_window, compute=compute,
        path=path, check=bool(check), stream=ctx.stream, dlpack_stream=ctx.dlpack_stream, plan=plan,
        workspace=e(workspace), workspace_alloc=ctx.byte_allocator(func))


def _plan_prefill_impl(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale, mask,
                       out, lse, cu_q_lens_host, kv_lens_host, func="PagedPrefill.plan", **common):
    """kvq::plan_prefill for these tensors and host lengths (lists or CPU arrays); common: causal,
    softmax_scale, layout, gqa_layout, local_window, global_window, compute, path. Returns the
    kvq.PrefillPlan."""
    ctx = Context(q)
    e = ctx.export
    return _lib().plan_prefill(
        func=func, q=e(q), k_cache=e(k_cache), v_cache=e(v_cache), block_tables=e(block_tables),
        cu_q_lens=e(cu_q_lens), kv_lens=e(kv_lens), k_scale=e(k_scale), v_scale=e(v_scale), q_scale=e(q_scale),
        mask=e(mask), out=e(out), lse=e(lse), dlpack_stream=ctx.dlpack_stream,
        cu_q_lens_host=_arrays.host_list(cu_q_lens_host, func, "cu_q_lens_host"),
        kv_lens_host=_arrays.host_list(kv_lens_host, func, "kv_lens_host"), **common)


def _decode_impl(q, k_cache, v_cache, block_tables, kv_lens, k_scale, v_scale, out, lse, softmax_scale,
                 layout, gqa_layout, local_window, global_window, check, num_splits, func="paged_decode"):
    ctx = Context(q)
    e = ctx.export
    _lib().paged_decode(
        func=func, q=e(q), k_cache=e(k_cache), v_cache=e(v_cache), block_tables=e(block_tables),
        kv_lens=e(kv_lens), k_scale=e(k_scale), v_scale=e(v_scale), out=e(out), lse=e(lse),
        softmax_scale=(None if not softmax_scale else float(softmax_scale)), layout=layout,
        gqa_layout=gqa_layout, local_window=local_window, global_window=global_window, check=bool(check),
        num_splits=int(num_splits), stream=ctx.stream, dlpack_stream=ctx.dlpack_stream,
        workspace_alloc=ctx.byte_allocator(func))


def _append_impl(k, v, slot_mapping, k_cache, v_cache, k_scale, v_scale, layout, check, func="append"):
    ctx = Context(k_cache)
    e = ctx.export
    _lib().append(func=func, k=e(k), v=e(v), slot_mapping=e(slot_mapping), k_cache=e(k_cache),
                  v_cache=e(v_cache), k_scale=e(k_scale), v_scale=e(v_scale), layout=layout,
                  check=bool(check), stream=ctx.stream, dlpack_stream=ctx.dlpack_stream)


def _dequant_impl(cache, scale, block_tables, kv_lens, out, out_block_tables, layout, check,
                  func="dequantize_blocks"):
    ctx = Context(cache)
    e = ctx.export
    _lib().dequantize_blocks(func=func, cache=e(cache), scale=e(scale), block_tables=e(block_tables),
                             kv_lens=e(kv_lens), out=e(out), out_block_tables=e(out_block_tables),
                             layout=layout, check=bool(check), stream=ctx.stream,
                             dlpack_stream=ctx.dlpack_stream)


def _calibrate_impl(x, out, func="calibrate"):
    ctx = Context(x)
    _lib().calibrate(func=func, x=ctx.export(x), out=ctx.export(out), stream=ctx.stream,
                     dlpack_stream=ctx.dlpack_stream)


def cuda_built() -> bool:
    """Whether the extension's libkvq has the CUDA backend."""
    return bool(_lib().cuda_built())


def cuda_available() -> bool:
    """Whether the CUDA backend can run now (built with CUDA and a device present)."""
    return bool(_lib().cuda_available())


def fast_head_dims():
    """Head dims with fast tensor-core instantiations in this build."""
    return list(_lib().fast_head_dims())
