"""kvq: paged attention over an int8-quantized KV cache.

Native API (python/README.md has the full reference):
  paged_prefill, paged_decode, append, dequantize_blocks, calibrate, PagedPrefill (= Plan),
  cuda_built, cuda_available, fast_head_dims.
Drop-in functions with mojo_opset's signatures (mojo_opset PR #361): kvq.compat.mojo.

Tensors are any DLPack producers (torch, numpy, cupy), viewed without copies. With torch installed,
the ops are also registered as torch.ops.kvq.* (torch.compile, CUDA graphs); set KVQ_NO_TORCH=1 to
skip that registration.
"""
import os as _os

from .ops import (  # noqa: F401
    PagedPrefill,
    Plan,
    append,
    calibrate,
    cuda_available,
    cuda_built,
    dequantize_blocks,
    fast_head_dims,
    paged_decode,
    paged_prefill,
)
from . import compat  # noqa: F401

try:
    from ._C import PrefillPlan  # noqa: F401
except ImportError:  # pragma: no cover - the ops raise a clear ImportError when called
    pass

__version__ = "0.1.0"

if _os.environ.get("KVQ_NO_TORCH", "") not in ("1", "true", "yes"):
    from .ops import enable_torch as _enable_torch

    _enable_torch()
