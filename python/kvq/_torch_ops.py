"""torch.library registration of the kvq ops (only when torch >= 2.4 is importable).

Ops (all in the ``kvq`` namespace, usable as ``torch.ops.kvq.<name>``):
  paged_prefill(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale?, v_scale?, q_scale?, mask?,
                out!, lse!?, causal, softmax_scale, layout, gqa_layout, local_window, global_window, compute,
                path, check) -> ()
  paged_decode(q, k_cache, v_cache, block_tables, kv_lens, k_scale?, v_scale?, out!, lse!?, softmax_scale,
               layout, gqa_layout, local_window, global_window, check, num_splits) -> ()
  append(k, v, slot_mapping, k_cache!, v_cache!, k_scale!?, v_scale!?, layout, check) -> ()
  dequantize_blocks(cache, scale, block_tables, kv_lens, out!, out_block_tables!?, layout, check) -> ()
  calibrate_out(x, out!) -> ()          calibrate(x) -> Tensor [Hkv, D] fp32

The ops write into their out arguments (declared mutated, so torch.compile functionalizes them) and
have fake implementations, so they trace under torch.compile and capture in CUDA graphs: the real
kernels run on torch.cuda.current_stream() and allocate only their workspace, from torch's caching
allocator (a graph's private pool during capture). softmax_scale 0 = 1/sqrt(D); local_window -1 =
no window.
"""
import warnings
from typing import Optional

from . import _arrays, _native

_registered = None  # None: not tried; False: unavailable; True: registered


def _register():
    torch = _arrays.torch_module()
    if torch is None or not hasattr(torch, "library") or not hasattr(torch.library, "custom_op"):
        return False
    from torch import Tensor

    @torch.library.custom_op("kvq::paged_prefill", mutates_args=("out", "lse"))
    def paged_prefill(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, cu_q_lens: Tensor,
                      kv_lens: Tensor, k_scale: Optional[Tensor], v_scale: Optional[Tensor],
                      q_scale: Optional[Tensor], mask: Optional[Tensor], out: Tensor, lse: Optional[Tensor],
                      causal: bool, softmax_scale: float, layout: str, gqa_layout: str, local_window: int,
                      global_window: int, compute: str, path: str, check: bool) -> None:
        _native._prefill_impl(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale, mask,
                              out, lse, causal, softmax_scale, layout, gqa_layout, local_window, global_window,
                              compute, path, check)

    @paged_prefill.register_fake
    def _(q, k_cache, v_cache, block_tables, cu_q_lens, kv_lens, k_scale, v_scale, q_scale, mask, out, lse,
          causal, softmax_scale, layout, gqa_layout, local_window, global_window, compute, path, check):
        return None

    @torch.library.custom_op("kvq::paged_decode", mutates_args=("out", "lse"))
    def paged_decode(q: Tensor, k_cache: Tensor, v_cache: Tensor, block_tables: Tensor, kv_lens: Tensor,
                     k_scale: Optional[Tensor], v_scale: Optional[Tensor], out: Tensor, lse: Optional[Tensor],
                     softmax_scale: float, layout: str, gqa_layout: str, local_window: int, global_window: int,
                     check: bool, num_splits: int) -> None:
        _native._decode_impl(q, k_cache, v_cache, block_tables, kv_lens, k_scale, v_scale, out, lse, softmax_scale,
                             layout, gqa_layout, local_window, global_window, check, num_splits)

    @paged_decode.register_fake
    def _(q, k_cache, v_cache, block_tables, kv_lens, k_scale, v_scale, out, lse, softmax_scale, layout,
          gqa_layout, local_window, global_window, check, num_splits):
        return None

    @torch.library.custom_op("kvq::append", mutates_args=("k_cache", "v_cache", "k_scale", "v_scale"))
    def append(k: Tensor, v: Tensor, slot_mapping: Tensor, k_cache: Tensor, v_cache: Tensor,
               k_scale: Optional[Tensor], v_scale: Optional[Tensor], layout: str, check: bool) -> None:
        _native._append_impl(k, v, slot_mapping, k_cache, v_cache, k_scale, v_scale, layout, check)

    @append.register_fake
    def _(k, v, slot_mapping, k_cache, v_cache, k_scale, v_scale, layout, check):
        return None

    @torch.library.custom_op("kvq::dequantize_blocks", mutates_args=("out", "out_block_tables"))
    def dequantize_blocks(cache: Tensor, scale: Tensor, block_tables: Tensor, kv_lens: Tensor, out: Tensor,
                          out_block_tables: Optional[Tensor], layout: str, check: bool) -> None:
        _native._dequant_impl(cache, scale, block_tables, kv_lens, out, out_block_tables, layout, check)

    @dequantize_blocks.register_fake
    def _(cache, scale, block_tables, kv_lens, out, out_block_tables, layout, check):
        return None

    @torch.library.custom_op("kvq::calibrate_out", mutates_args=("out",))
    def calibrate_out(x: Tensor, out: Tensor) -> None:
        _native._calibrate_impl(x, out)

    @calibrate_out.register_fake
    def _(x, out):
        return None

    @torch.library.custom_op("kvq::calibrate", mutates_args=())
    def calibrate(x: Tensor) -> Tensor:
        out = torch.empty(x.shape[1:], dtype=torch.float32, device=x.device)
        _native._calibrate_impl(x, out)
        return out

    @calibrate.register_fake
    def _(x):
        return x.new_empty(x.shape[1:], dtype=torch.float32)

    return True


def available() -> bool:
    """Registers the ops on first use; True when torch.ops.kvq.* exist."""
    global _registered
    if _registered is None:
        try:
            _registered = _register()
        except Exception as e:  # noqa: BLE001 - kvq stays usable without the torch ops
            warnings.warn(f"kvq: registering the torch.library ops failed ({type(e).__name__}: {e}); torch "
                          "tensors are passed to the extension directly (no torch.compile support)")
            _registered = False
    return _registered


def ops():
    return _arrays.torch_module().ops.kvq
