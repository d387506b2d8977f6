"""Array-library plumbing: which library a tensor comes from, how to allocate like it, which CUDA
stream to run on, and how to hand it to ``kvq._C`` without copying.

torch tensors are exported with ``torch.utils.dlpack.to_dlpack`` (a capsule; no stream
synchronization, no autograd check) and run on ``torch.cuda.current_stream()``. cupy arrays run on
cupy's current stream. Any other CUDA array runs on the legacy default stream (DLPack stream 1).
numpy arrays (and every CPU tensor) run the CPU backend.
"""
from __future__ import annotations

import sys

# DLPack device types.
_KDL_CUDA = 2
_KDL_CUDA_MANAGED = 13
# cudaStreamLegacy, also DLPack's "legacy default stream" for CUDA.
LEGACY_STREAM = 1


def torch_module():
    """torch if it is already imported or importable, else None (never installs anything)."""
    t = sys.modules.get("torch")
    if t is not None:
        return t
    try:
        import torch  # noqa: F401
    except Exception:  # pragma: no cover - absence of torch is the common case here
        return None
    return sys.modules["torch"]


def library_of(x) -> str:
    """'torch', 'numpy', 'cupy' or 'other' (anything else, including non-tensors)."""
    mod = type(x).__module__.split(".", 1)[0]
    if mod in ("torch", "numpy", "cupy"):
        return mod
    return "other"


def is_torch(x) -> bool:
    return library_of(x) == "torch"


def is_array(x) -> bool:
    return hasattr(x, "__dlpack__") and hasattr(x, "shape") and hasattr(x, "dtype")


def on_cuda(x) -> bool:
    if not hasattr(x, "__dlpack_device__"):
        return False
    return int(x.__dlpack_device__()[0]) in (_KDL_CUDA, _KDL_CUDA_MANAGED)


def dtype_name(x) -> str:
    """'bfloat16', 'float16', 'float32', 'int8', 'int32', 'int64', 'uint8', 'bool', ..."""
    d = x.dtype
    name = getattr(d, "name", None)
    if isinstance(name, str):
        return name
    return str(d).replace("torch.", "")


class Context:
    """How to run on the library and device of a lead tensor (q, or the cache for append)."""

    def __init__(self, lead):
        self.lib = library_of(lead)
        self.lead = lead
        self.cuda = is_array(lead) and on_cuda(lead)
        self.stream = None
        self.dlpack_stream = None
        if self.cuda:
            if self.lib == "torch":
                torch = torch_module()
                # torch's default stream has handle 0, the legacy default stream.
                self.stream = int(torch.cuda.current_stream(lead.device).cuda_stream)
                # torch tensors travel as capsules; this only tells foreign CUDA arrays mixed in
                # which stream consumes them (DLPack forbids 0 and spells the legacy stream 1).
                self.dlpack_stream = self.stream if self.stream != 0 else LEGACY_STREAM
            elif self.lib == "cupy":
                import cupy

                ptr = int(cupy.cuda.get_current_stream().ptr)
                self.stream = ptr
                self.dlpack_stream = ptr if ptr != 0 else LEGACY_STREAM
            else:
                self.stream = LEGACY_STREAM
                self.dlpack_stream = LEGACY_STREAM

    def export(self, x):
        """What _C receives for x: a capsule for torch tensors, the object itself otherwise."""
        if x is None:
            return None
        if library_of(x) == "torch":
            torch = torch_module()
            return torch.utils.dlpack.to_dlpack(x.detach() if x.requires_grad else x)
        return x

    def empty(self, shape, dtype: str, func: str, arg: str):
        """An uninitialized array of the lead's library and device."""
        shape = tuple(int(s) for s in shape)
        if self.lib == "torch":
            torch = torch_module()
            return torch.empty(shape, dtype=getattr(torch, dtype), device=self.lead.device)
        if self.lib in ("numpy", "cupy"):
            mod = sys.modules.get(self.lib) or __import__(self.lib)
            if dtype == "bfloat16":
                raise TypeError(
                    f"{func}: {arg}: expected a {self.lib} dtype for {dtype}, got none ({self.lib} has no "
                    f"bfloat16): pass {arg}= explicitly (a torch tensor, or fp16 inputs)")
            if self.lib == "cupy":
                with mod.cuda.Device(self.lead.device.id):
                    return mod.empty(shape, dtype=dtype)
            return mod.empty(shape, dtype=dtype)
        # An unknown DLPack producer: borrow numpy for CPU tensors.
        if not self.cuda:
            import numpy

            if dtype == "bfloat16":
                raise TypeError(f"{func}: {arg}: expected {arg}= for a bfloat16 result of a "
                                f"{type(self.lead).__name__} input, got none")
            return numpy.empty(shape, dtype=dtype)
        raise TypeError(f"{func}: {arg}: expected {arg}= to be given for CUDA arrays of "
                        f"{type(self.lead).__name__}, got none (kvq allocates torch and cupy arrays only)")

    def byte_allocator(self, func: str):
        """bytes -> 1-D uint8 array on the lead's device (workspaces), exported like the arguments (a
        capsule for torch: no stream synchronization, which a CUDA-graph capture would not allow)."""
        return lambda n: self.export(self.empty((int(n),), "uint8", func, "workspace"))


def require_array(x, func: str, arg: str):
    if not is_array(x):
        raise TypeError(f"{func}: {arg}: expected a tensor (an object with __dlpack__: torch.Tensor, "
                        f"numpy.ndarray, cupy.ndarray), got {type(x).__name__}")


def to_int32(x, func: str, arg: str):
    """x as int32 in its own library (a no-op when it already is)."""
    if dtype_name(x) == "int32":
        return x
    if library_of(x) == "torch":
        torch = torch_module()
        return x.to(torch.int32)
    if hasattr(x, "astype"):
        return x.astype("int32")
    raise TypeError(f"{func}: {arg}: expected an int32 tensor, got {type(x).__name__} {dtype_name(x)}")


def diff_lengths(cu, func: str, arg: str):
    """cu [B+1] cumulative -> lengths [B] int32, in cu's library and device (no host sync)."""
    require_array(cu, func, arg)
    if len(cu.shape) != 1 or cu.shape[0] < 1:
        raise ValueError(f"{func}: {arg}: expected a 1-D cumulative [batch_size + 1] tensor, got shape "
                         f"{list(cu.shape)}")
    return to_int32(cu[1:] - cu[:-1], func, arg)


def host_list(x, func: str, arg: str):
    """A host list of ints from a list/tuple/array/tensor (syncs for device tensors)."""
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return [int(v) for v in x]
    if hasattr(x, "tolist"):
        if library_of(x) == "torch":
            return [int(v) for v in x.detach().cpu().tolist()]
        if library_of(x) == "cupy":
            return [int(v) for v in x.get().tolist()]
        return [int(v) for v in x.tolist()]
    raise TypeError(f"{func}: {arg}: expected a host sequence of lengths, got {type(x).__name__}")


def bool_as_uint8(x):
    """numpy/cupy bool arrays as a zero-copy uint8 view (numpy's DLPack export refuses bool)."""
    if x is not None and library_of(x) in ("numpy", "cupy") and dtype_name(x) == "bool":
        return x.view("uint8")
    return x
