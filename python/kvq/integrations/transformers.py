"""kvq inside Hugging Face transformers: an int8 paged KV cache and the "kvq" attention for generate().

    import torch
    from transformers import AutoModelForCausalLM
    from kvq.integrations.transformers import KvqCache, enable

    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.bfloat16).cuda()
    enable(model)                                   # registers "kvq" and switches the model to it
    cache = KvqCache(model.config, max_batch_size=8, max_cache_len=4096, device="cuda")
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=256)

Or register first and load with ``attn_implementation="kvq"`` (``register()`` then
``from_pretrained(..., attn_implementation="kvq")``).

What it is:
  KvqCache     a ``transformers.Cache``: per layer int8 K/V pages ``[num_blocks, Hkv, page_size, D]``
               (HND), one block table per batch row, per-token scales written by ``kvq.append``
               (``scales="per_token"``, the default) or per-channel scales calibrated on the first
               forward (the prompt) with ``kvq.calibrate`` (``scales="per_channel"``).
  "kvq"        the attention function (``transformers.AttentionInterface``) and its mask function
               (``AttentionMaskInterface``, which hands the 2D padding mask through). Prompts and
               chunked prefill run ``kvq.paged_prefill`` (causal, bottom-right aligned), single new
               tokens ``kvq.paged_decode``, both over the cache. RoPE stays in the model.

Padding: the tokens the attention mask marks as padding are never written to the cache, and every
row's attention uses its own true lengths, so left-padded batches of prompts of different lengths
give each row the attention of its unpadded prompt.

Memory: ``cache.kv_bytes()`` (int8 pages and scales) against ``cache.bf16_bytes()`` (a bf16 cache of
the same capacity) or ``dense_cache_bytes(cache)`` of any transformers cache.

Not served (each raises an error naming the feature): attention dropout (training), attention
weights (``output_attentions``), non-causal or cross-attention, encoder-decoder models, chunked or
linear-attention layers, logit soft-capping, attention sinks, custom 4D masks, packed sequences,
beam search / assisted decoding (cache reordering, cropping), a batch larger than the cache, more
tokens than ``max_cache_len``, autograd (inference only), torch.compile of the decode step.

This module imports without torch or transformers; the names below load them on first use and
raise ImportError saying what is missing.
"""
from __future__ import annotations

ATTN_IMPLEMENTATION = "kvq"

__all__ = [
    "ATTN_IMPLEMENTATION",
    "KvqCache",
    "dense_cache_bytes",
    "enable",
    "kvq_attention_forward",
    "kvq_attention_mask",
    "register",
]

_LAZY = ("KvqCache", "dense_cache_bytes", "kvq_attention_forward", "kvq_attention_mask")
_impl = None


def _load():
    """The implementation module (imports torch and transformers once)."""
    global _impl
    if _impl is not None:
        return _impl
    try:
        import torch  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"kvq.integrations.transformers needs PyTorch (>= 2.4), which could not be imported: {e}") from e
    try:
        import transformers
        from transformers import cache_utils  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"kvq.integrations.transformers needs Hugging Face transformers (5.x), which could not be imported: "
            f"{e}") from e
    if not hasattr(transformers.cache_utils, "CacheLayerMixin") or not hasattr(transformers, "AttentionInterface"):
        raise ImportError(
            f"kvq.integrations.transformers needs transformers 5.x (Cache layers and AttentionInterface), got "
            f"transformers {getattr(transformers, '__version__', '?')}")
    from . import _hf_impl

    _impl = _hf_impl
    return _impl


def register() -> str:
    """Register "kvq" in transformers' AttentionInterface and AttentionMaskInterface (idempotent).
    Returns the implementation name to pass as ``attn_implementation``."""
    return _load().register()


def enable(model):
    """Check that ``model`` is served (raises naming what is not), register "kvq" and switch the model's
    attention to it (``model.set_attn_implementation("kvq")``). Returns the model."""
    return _load().enable(model)


def __getattr__(name):
    if name in _LAZY:
        return getattr(_load(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
