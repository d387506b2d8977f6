"""The implementation behind kvq.integrations.transformers (imports torch and transformers).

One forward step, for every attention layer (all layers see the same new tokens):
  1. The model computes q [B, Hq, q_len, D], k, v [B, Hkv, q_len, D] and applies RoPE (K arrives rotated).
  2. ``KvqCache.update(k, v, layer_idx)`` validates them, counts the new tokens (``get_seq_length`` keeps
     transformers' padded count), allocates the pages on first use and hands k, v over to the attention
     function, returning them unchanged.
  3. ``kvq_attention_forward(module, q, k, v, attention_mask)`` takes that hand-over, builds the step's
     metadata once (at the first layer of the step): which new tokens are real (the 2D padding mask),
     their cache slots, every row's true kv length, ``cu_q_lens`` and the packing order; it writes k, v
     into the int8 pages with ``kvq.append`` and runs ``kvq.paged_prefill`` (q_len > 1: prompts and
     chunked prefill, causal, bottom-right aligned) or ``kvq.paged_decode`` (q_len == 1).

Why the write is in the attention function and not in update(): update() receives only the new K/V
(no attention mask; transformers >= 5.5 passes no cache_position either), so it cannot know which of
the new tokens are padding. kvq keeps padding out of the cache (slot -1), so each row holds exactly its
real tokens and decode needs no mask; the attention function is the first place that sees the mask.

Left padding: a row with p padding tokens and n real ones in a chunk of q_len = p + n writes only the
n real tokens, at its own next positions; its queries are packed (real tokens first, in order) so
kvq sees the varlen batch it expects, and the outputs of padding queries are zeros. RoPE positions
come from the model (generate() numbers real tokens from 0), so relative positions match the padded
attention of sdpa exactly. Sliding windows map to kvq's local_window (window - 1): distances between
real tokens of a left-padded row are the same with or without the padding.
"""
from __future__ import annotations

import math
import threading
import weakref

import torch
from transformers import AttentionInterface
from transformers import masking_utils as _masking
from transformers.cache_utils import Cache, CacheLayerMixin

from .. import ops as _ops

NAME = "kvq"
_SERVED_LAYER_TYPES = ("full_attention", "sliding_attention")
_FLOAT_DTYPES = (torch.bfloat16, torch.float16)
# Attention-function kwargs that ask for something kvq does not compute.
_UNSERVED_KWARGS = {
    "softcap": "logit soft-capping",
    "s_aux": "attention sinks",
    "sinks": "attention sinks",
    "position_bias": "an additive position bias",
    "cu_seq_lens_q": "packed (varlen) sequences",
    "cu_seq_lens_k": "packed (varlen) sequences",
}

# --------------------------------------------------------------------------------------------------
# Hand-over from KvqCache.update() to the attention function of the same layer
# --------------------------------------------------------------------------------------------------

_local = threading.local()


def _hand_over(cache, layer_idx, key, value):
    # A weak reference: a hand-over nobody took (an error in between) must not keep the pages alive.
    _local.handoff = (weakref.ref(cache), layer_idx, key, value)


def _take_handoff(key, value):
    """(cache, layer_idx) when key/value are the very tensors the last KvqCache.update() returned."""
    h = getattr(_local, "handoff", None)
    if h is None or h[2] is not key or h[3] is not value:
        return None, None
    _local.handoff = None
    cache = h[0]()
    return (cache, h[1]) if cache is not None else (None, None)


# --------------------------------------------------------------------------------------------------
# Config checks (shared by KvqCache and enable)
# --------------------------------------------------------------------------------------------------

def _text_config(config):
    get = getattr(config, "get_text_config", None)
    if get is None:
        return config
    try:
        return get(decoder=True)
    except TypeError:
        return get()


def _model_geometry(config, who):
    """(num_layers, num_qo_heads, num_kv_heads, head_dim, layer_types) of a decoder config; raises,
    naming the feature, for what kvq does not serve."""
    if getattr(config, "is_encoder_decoder", False):
        raise NotImplementedError(f"{who}: encoder-decoder models (cross-attention) are not served by kvq; "
                                  "it serves decoder-only causal self-attention")
    text = _text_config(config)
    num_layers = int(text.num_hidden_layers)
    num_qo_heads = int(text.num_attention_heads)
    num_kv_heads = int(getattr(text, "num_key_value_heads", None) or num_qo_heads)
    head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // num_qo_heads)
    if num_qo_heads % num_kv_heads != 0:
        raise ValueError(f"{who}: num_attention_heads: expected a multiple of num_key_value_heads = {num_kv_heads} "
                         f"(GQA), got {num_qo_heads}")
    if not 1 <= head_dim <= 256:
        raise ValueError(f"{who}: head_dim: expected a value in [1, 256], got {head_dim}")
    for attr, what in (("kv_lora_rank", "multi-head latent attention (MLA)"),
                       ("attention_chunk_size", "chunked attention"),
                       ("attn_logit_softcapping", "attention logit soft-capping"),
                       ("num_kv_shared_layers", "KV sharing across layers")):
        if getattr(text, attr, None):
            raise NotImplementedError(f"{who}: {attr} = {getattr(text, attr)!r}: {what} is not served by kvq")
    layer_types = list(getattr(text, "layer_types", None) or ["full_attention"] * num_layers)[:num_layers]
    for i, t in enumerate(layer_types):
        if t not in _SERVED_LAYER_TYPES:
            raise NotImplementedError(f"{who}: layer {i} is a {t!r} layer; kvq serves {list(_SERVED_LAYER_TYPES)} "
                                      "(sliding windows map to kvq's local_window)")
    return num_layers, num_qo_heads, num_kv_heads, head_dim, layer_types


_BACKENDS_OK = set()


def _check_backend(device):
    """Raise, when the cache is allocated, what would otherwise surface at the first kvq.append deep
    inside generate(): no compiled extension, or CUDA tensors with a kvq that cannot run CUDA."""
    if device.type in _BACKENDS_OK:
        return
    try:
        _ops.cuda_built()  # raises ImportError without the extension
        ok = device.type != "cuda" or _ops.cuda_available()
    except ImportError as e:
        raise ImportError(f"KvqCache: kvq's compiled extension (kvq._C) is not importable: {e}") from e
    if not ok:
        raise RuntimeError(
            f"KvqCache: device {device}: kvq's CUDA backend cannot run here (kvq.cuda_built() = {_ops.cuda_built()}, "
            "kvq.cuda_available() = False): build kvq with CUDA for this GPU, or keep the model and the cache on "
            "the CPU (kvq's CPU backend)")
    _BACKENDS_OK.add(device.type)


# --------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------

class _Step:
    """Metadata of one forward step, shared by all layers (tensors on the cache's device).

    start      tokens (padded count) before this step; q_len new tokens per row; batch rows B.
    valid      [B * q_len] bool, the real (non-padding) new tokens, or None (all real).
    slots      [B * q_len] int64 cache slot of each new token (block * page_size + offset), -1 for padding.
    kv_lens    [B] int32 real tokens per row after this step.
    cu_q_lens  [B + 1] int32 cumulative real new tokens (prefill only).
    dest       [B * q_len] int64 packing permutation (prefill with a mask): token t goes to row dest[t]
               of the packed q; real tokens fill rows [0, cu_q_lens[B]) in (row, position) order.
    """

    __slots__ = ("start", "q_len", "batch", "valid", "slots", "kv_lens", "cu_q_lens", "dest")


class KvqLayer(CacheLayerMixin):
    """One layer of a KvqCache: int8 pages and scales. The bookkeeping lives in the KvqCache.

    k_cache, v_cache  [num_blocks, num_kv_heads, page_size, head_dim] int8 (HND)
    k_scale, v_scale  per-token [num_blocks, num_kv_heads, page_size] fp32 (written by kvq.append), or
                      per-channel [num_kv_heads, head_dim] fp32 (kvq.calibrate on the first forward)
    """

    is_compileable = False
    is_sliding = False
    supports_early_init = True

    def __init__(self, owner, layer_idx):
        super().__init__()
        self._owner = weakref.ref(owner)
        self.layer_idx = layer_idx
        self.k_cache = self.v_cache = self.k_scale = self.v_scale = None
        self.calibrated = False
        self.device = None

    def _cache(self):
        owner = self._owner()
        if owner is None:
            raise RuntimeError("KvqLayer: its KvqCache no longer exists")
        return owner

    def lazy_initialization(self, key_states, *args, **kwargs):
        self._cache()._allocate(key_states.device)

    def update(self, *args, **kwargs):
        raise NotImplementedError("KvqLayer.update: write through KvqCache.update(key_states, value_states, layer_idx) "
                                  "and the 'kvq' attention function")

    def get_mask_sizes(self, query_length, *args, **kwargs):
        return self._cache().get_mask_sizes(query_length, self.layer_idx)

    def get_seq_length(self, *args, **kwargs):
        return self._cache().get_seq_length(self.layer_idx)

    def get_max_length(self, *args, **kwargs):
        return self._cache().get_max_length()

    def get_max_cache_shape(self, *args, **kwargs):
        return self._cache().get_max_length()

    def offload(self):
        raise NotImplementedError("KvqCache: offloading to the CPU is not served")

    def prefetch(self):
        return None

    def reset(self):
        self._cache().reset()

    def reorder_cache(self, beam_idx):
        self._cache().reorder_cache(beam_idx)

    def crop(self, *args, **kwargs):
        self._cache().crop(*args, **kwargs)

    def batch_repeat_interleave(self, repeats):
        self._cache().batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices):
        self._cache().batch_select_indices(indices)

    @property
    def batch_size(self):
        return self._cache().max_batch_size

    @property
    def max_batch_size(self):
        return self._cache().max_batch_size

    @property
    def max_cache_len(self):
        return self._cache().get_max_length()


class KvqCache(Cache):
    """An int8 paged KV cache for transformers' generate() and forward(), read by the "kvq" attention.

    Args:
      config: the model's config (``model.config``); its attention implementation must be "kvq"
        (``enable(model)`` or ``attn_implementation="kvq"``).
      max_batch_size: rows the cache holds (batch row b uses block-table row b).
      max_cache_len: tokens per row, padding included (transformers' count: prompt width + new tokens).
      device: where the pages live; None = the device of the first key states.
      page_size: tokens per page (any >= 1; 16 by default).
      scales: "per_token" (default): per-token scales computed and stored by kvq.append;
        "per_channel": per-(kv head, channel) scales calibrated by kvq.calibrate on each layer's first
        forward (the prompt; padding excluded) and kept for the rest of the sequence (later tokens
        beyond the calibrated range are clipped).

    Memory per layer: 2 * num_blocks * Hkv * page_size * D bytes of int8 pages, plus the scales
    (per-token: 2 * num_blocks * Hkv * page_size * 4 bytes), num_blocks = max_batch_size *
    ceil(max_cache_len / page_size). ``kv_bytes()`` sums them; ``bf16_bytes()`` is a bf16 cache of the
    same capacity.

    Rows keep only their real tokens: a left-padded prompt never writes its padding. Use one cache per
    generate() call, or ``reset()`` it between calls.
    """

    def __init__(self, config, max_batch_size, max_cache_len, device=None, *, page_size=16, scales="per_token"):
        who = "KvqCache"
        num_layers, num_qo_heads, num_kv_heads, head_dim, layer_types = _model_geometry(config, who)
        if int(max_batch_size) < 1:
            raise ValueError(f"{who}: max_batch_size: expected >= 1, got {max_batch_size}")
        if int(max_cache_len) < 1:
            raise ValueError(f"{who}: max_cache_len: expected >= 1, got {max_cache_len}")
        if int(page_size) < 1:
            raise ValueError(f"{who}: page_size: expected >= 1, got {page_size}")
        if scales not in ("per_token", "per_channel"):
            raise ValueError(f"{who}: scales: expected \"per_token\" or \"per_channel\", got {scales!r}")
        self._config = config
        self._num_layers = num_layers
        self.num_qo_heads = num_qo_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.layer_types = layer_types
        self._max_batch = int(max_batch_size)
        self._max_len = int(max_cache_len)
        self.page_size = int(page_size)
        self.scales = scales
        self.blocks_per_seq = math.ceil(self._max_len / self.page_size)
        self.num_blocks = self._max_batch * self.blocks_per_seq
        self.device = None
        self.block_tables = None  # [max_batch_size, blocks_per_seq] int32: row b owns its own blocks
        self._lens = None         # [max_batch_size] int32 real tokens per row after the latest step
        self._seen = [0] * num_layers
        self._batch = None
        self._meta = None
        super().__init__(layers=[KvqLayer(self, i) for i in range(num_layers)])
        if device is not None:
            self._allocate(torch.device(device))

    @classmethod
    def from_model(cls, model, max_batch_size, max_cache_len, **kwargs):
        """A KvqCache on the model's device (``KvqCache(model.config, ..., device=model.device)``)."""
        kwargs.setdefault("device", getattr(model, "device", None))
        return cls(model.config, max_batch_size, max_cache_len, **kwargs)

    def __repr__(self):
        return (f"KvqCache(layers={self._num_layers}, max_batch_size={self._max_batch}, "
                f"max_cache_len={self._max_len}, page_size={self.page_size}, scales={self.scales!r}, "
                f"num_kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, device={self.device})")

    # -- allocation ------------------------------------------------------------------------------

    def _allocate(self, device):
        if self.device is not None:
            return
        _check_backend(torch.device(device))
        nb, hkv, ps, d = self.num_blocks, self.num_kv_heads, self.page_size, self.head_dim
        self.block_tables = torch.arange(nb, dtype=torch.int32, device=device).view(self._max_batch,
                                                                                    self.blocks_per_seq)
        self.device = self.block_tables.device
        self._lens = torch.zeros(self._max_batch, dtype=torch.int32, device=self.device)
        scale_shape = (nb, hkv, ps) if self.scales == "per_token" else (hkv, d)
        for layer in self.layers:
            layer.k_cache = torch.empty((nb, hkv, ps, d), dtype=torch.int8, device=self.device)
            layer.v_cache = torch.empty_like(layer.k_cache)
            # Ones, not garbage: a page's unwritten tail is masked, but it must stay finite.
            layer.k_scale = torch.ones(scale_shape, dtype=torch.float32, device=self.device)
            layer.v_scale = torch.ones_like(layer.k_scale)
            layer.device = self.device
            layer.is_initialized = True

    # -- transformers' Cache interface -----------------------------------------------------------

    def _check_implementation(self):
        if getattr(self._config, "_attn_implementation", None) == NAME:
            return
        impls = {getattr(self._config, "_attn_implementation", None),
                 getattr(_text_config(self._config), "_attn_implementation", None)}
        if NAME not in impls:
            impl = getattr(self._config, "_attn_implementation", None)
            raise ValueError(
                f"KvqCache: attn_implementation: expected {NAME!r} (the only attention that reads this cache), got "
                f"{impl!r}: call kvq.integrations.transformers.enable(model), or register() and load the model with "
                f"attn_implementation={NAME!r}")

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        """Validate the new K/V of one layer ([B, Hkv, q_len, D]), count them and hand them to the kvq
        attention function, which writes them (it alone sees the padding mask). Returns them as they came."""
        self._check_implementation()
        who = "KvqCache.update"
        if not 0 <= int(layer_idx) < self._num_layers:
            raise ValueError(f"{who}: layer_idx: expected a value in [0, {self._num_layers}), got {layer_idx}")
        layer_idx = int(layer_idx)
        if key_states.dim() != 4 or tuple(value_states.shape) != tuple(key_states.shape):
            raise ValueError(f"{who}: key_states, value_states: expected [batch, num_kv_heads, seq_len, head_dim] of "
                             f"one shape, got {list(key_states.shape)} and {list(value_states.shape)}")
        batch, num_kv_heads, q_len, head_dim = (int(s) for s in key_states.shape)
        if num_kv_heads != self.num_kv_heads or head_dim != self.head_dim:
            raise ValueError(f"{who}: key_states: expected [batch, {self.num_kv_heads}, seq_len, {self.head_dim}] "
                             f"(the config's num_key_value_heads and head_dim), got {list(key_states.shape)}")
        if batch > self._max_batch:
            raise ValueError(f"{who}: batch_size: expected at most max_batch_size = {self._max_batch}, got {batch}: "
                             f"build the cache with KvqCache(config, max_batch_size={batch}, ...)")
        if key_states.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{who}: key_states: expected bfloat16 or float16 (kvq attention runs in the model's "
                            f"16-bit dtype), got {key_states.dtype}: load the model with dtype=torch.bfloat16")
        if self.device is None:
            self._allocate(key_states.device)
        elif key_states.device != self.device:
            raise ValueError(f"{who}: key_states: expected tensors on {self.device} (the cache's device), got "
                             f"{key_states.device}")
        seen = self._seen[layer_idx]
        if seen + q_len > self._max_len:
            raise ValueError(f"{who}: max_cache_len: expected at most {self._max_len} tokens per row (padding "
                             f"included), got {seen} cached + {q_len} new: build the cache with a larger "
                             "max_cache_len (prompt width + max_new_tokens)")
        self._seen[layer_idx] = seen + q_len
        _hand_over(self, layer_idx, key_states, value_states)
        return key_states, value_states

    def get_seq_length(self, layer_idx=0):
        """Tokens seen by layer ``layer_idx``, padding included (transformers' count, as DynamicCache's)."""
        if not 0 <= int(layer_idx) < self._num_layers:
            return 0
        return self._seen[int(layer_idx)]

    def get_mask_sizes(self, query_length, layer_idx=0):
        """(kv_length, kv_offset) for mask creation; ``query_length`` is an int (transformers >= 5.5) or the
        cache_position tensor (earlier 5.x)."""
        if isinstance(query_length, torch.Tensor) and query_length.dim() > 0:
            q_len = int(query_length.shape[0])
        else:
            q_len = int(query_length)
        return self.get_seq_length(layer_idx) + q_len, 0

    def get_query_offset(self, layer_idx=0):
        return self.get_seq_length(layer_idx)

    def get_max_length(self, layer_idx=None):
        return self._max_len

    def get_max_cache_shape(self, layer_idx=0):
        return self._max_len

    def reset(self):
        """Forget every sequence (the pages are reused; per-channel scales are recalibrated)."""
        self._seen = [0] * self._num_layers
        self._batch = None
        self._meta = None
        if self._lens is not None:
            self._lens.zero_()
        for layer in self.layers:
            layer.calibrated = False
            if layer.k_scale is not None and self.scales == "per_channel":
                layer.k_scale = torch.ones_like(layer.k_scale)
                layer.v_scale = torch.ones_like(layer.v_scale)

    def reorder_cache(self, beam_idx):
        raise NotImplementedError("KvqCache.reorder_cache: beam search is not served (use greedy or sampling)")

    def crop(self, *args, **kwargs):
        raise NotImplementedError("KvqCache.crop: cropping (assisted / speculative decoding, contrastive search) is "
                                  "not served")

    def batch_repeat_interleave(self, repeats):
        raise NotImplementedError("KvqCache.batch_repeat_interleave: expanding a filled cache (contrastive search, "
                                  "assisted decoding) is not served; expand the inputs before generate()")

    def batch_select_indices(self, indices):
        raise NotImplementedError("KvqCache.batch_select_indices: selecting rows of a filled cache is not served")

    @property
    def is_compileable(self):
        return False

    @property
    def is_sliding(self):
        # Sliding layers keep every token and mask by distance, so all layers report the same sizes.
        return [False] * self._num_layers

    @property
    def is_initialized(self):
        return self.device is not None

    @property
    def batch_size(self):
        return self._max_batch

    @property
    def max_batch_size(self):
        return self._max_batch

    @property
    def max_cache_len(self):
        return self._max_len

    # -- memory accounting -----------------------------------------------------------------------

    def kv_bytes(self):
        """Bytes of the int8 cache at its capacity: K and V pages of every layer, their scales and the
        block table (the same whether or not the pages are allocated yet)."""
        nb, hkv, ps, d = self.num_blocks, self.num_kv_heads, self.page_size, self.head_dim
        scale_elems = nb * hkv * ps if self.scales == "per_token" else hkv * d
        per_layer = 2 * nb * hkv * ps * d + 2 * scale_elems * 4
        return self._num_layers * per_layer + self._max_batch * self.blocks_per_seq * 4

    def bf16_bytes(self, max_batch_size=None, max_cache_len=None):
        """Bytes of a bf16 (or fp16) K/V cache holding max_batch_size x max_cache_len tokens per layer
        (defaults: this cache's capacity), as transformers' StaticCache or a full DynamicCache holds them."""
        b = self._max_batch if max_batch_size is None else int(max_batch_size)
        n = self._max_len if max_cache_len is None else int(max_cache_len)
        return self._num_layers * 2 * b * n * self.num_kv_heads * self.head_dim * 2

    def memory_report(self):
        """A dict: kv_bytes, bf16_bytes, ratio, and the layout that gives them."""
        kv, dense = self.kv_bytes(), self.bf16_bytes()
        return {"kv_bytes": kv, "bf16_bytes": dense, "ratio": kv / dense, "layers": self._num_layers,
                "max_batch_size": self._max_batch, "max_cache_len": self._max_len, "page_size": self.page_size,
                "num_blocks": self.num_blocks, "num_kv_heads": self.num_kv_heads, "head_dim": self.head_dim,
                "scales": self.scales}

    def seq_lengths(self):
        """Real (unpadded) tokens per batch row, as a host list (synchronizes)."""
        if self._lens is None or self._batch is None:
            return []
        return [int(x) for x in self._lens[: self._batch].tolist()]

    # -- the kvq side ----------------------------------------------------------------------------

    def _step(self, layer_idx, batch, q_len, attention_mask):
        """The metadata of the current step, built by its first layer and reused by the others."""
        start = self._seen[layer_idx] - q_len
        m = self._meta
        if m is not None and m.start == start:
            if m.q_len != q_len or m.batch != batch:
                raise RuntimeError(f"kvq attention: layer {layer_idx} sees {batch} x {q_len} new tokens, the other "
                                   f"layers of this step saw {m.batch} x {m.q_len}")
            return m
        if m is not None and start < m.start:
            raise RuntimeError(f"kvq attention: layer {layer_idx} is at token {start}, behind the step being served "
                               f"(token {m.start}): every layer must run every forward step")
        if start == 0:
            self._batch = batch
        elif batch != self._batch:
            raise ValueError(f"kvq attention: batch_size: expected {self._batch} (the rows this cache holds), got "
                             f"{batch}: reset() the cache (or build a new one) for a new batch")
        dev = self.device
        valid = None
        if attention_mask is not None:
            if not isinstance(attention_mask, torch.Tensor) or attention_mask.dim() != 2:
                shape = list(attention_mask.shape) if hasattr(attention_mask, "shape") else "?"
                raise NotImplementedError(
                    f"kvq attention: attention_mask: expected the 2D padding mask [batch, seq_len] (or None), got "
                    f"{type(attention_mask).__name__} {shape}: custom 4D masks are not served")
            if tuple(attention_mask.shape) != (batch, start + q_len):
                raise ValueError(f"kvq attention: attention_mask: expected [{batch}, {start + q_len}] (batch, cached "
                                 f"+ new tokens), got {list(attention_mask.shape)}")
            valid = attention_mask[:, start:].to(device=dev, dtype=torch.bool)
            # Prompts without padding skip the packing; one host sync per prefill step, never in decode.
            if q_len > 1 and bool(valid.all()):
                valid = None
        lens_before = (torch.zeros(batch, dtype=torch.int32, device=dev) if start == 0
                       else self._lens[:batch].clone())
        if valid is None:
            n_new = torch.full((batch,), q_len, dtype=torch.int32, device=dev)
            rank = torch.arange(q_len, dtype=torch.int64, device=dev).expand(batch, q_len)
        else:
            n_new = valid.sum(dim=1, dtype=torch.int32)
            rank = (torch.cumsum(valid, dim=1, dtype=torch.int64) - 1).clamp(min=0)
        pos = lens_before.to(torch.int64).unsqueeze(1) + rank
        blk = torch.gather(self.block_tables[:batch].to(torch.int64), 1, pos // self.page_size)
        slots = blk * self.page_size + pos % self.page_size
        if valid is not None:
            slots = slots.masked_fill(~valid, -1)
        kv_lens = lens_before + n_new
        self._lens[:batch].copy_(kv_lens)

        s = _Step()
        s.start, s.q_len, s.batch = start, q_len, batch
        s.valid = None if valid is None else valid.reshape(-1)
        s.slots = slots.reshape(-1)
        s.kv_lens = kv_lens
        s.cu_q_lens = None
        s.dest = None
        if q_len > 1:
            cu = torch.zeros(batch + 1, dtype=torch.int32, device=dev)
            cu[1:] = torch.cumsum(n_new, dim=0, dtype=torch.int32)
            s.cu_q_lens = cu
            if valid is not None:
                flat = s.valid
                real_rank = torch.cumsum(flat, dim=0, dtype=torch.int64) - 1
                pad_rank = torch.cumsum(~flat, dim=0, dtype=torch.int64) - 1
                num_real = real_rank[-1:] + 1
                s.dest = torch.where(flat, real_rank, num_real + pad_rank)
        self._meta = s
        return s

    def _calibrate(self, layer, k_new, v_new, step):
        if step.valid is not None:
            keep = step.valid.to(k_new.dtype).view(-1, 1, 1)
            k_new, v_new = k_new * keep, v_new * keep
        layer.k_scale = _ops.calibrate(k_new)
        layer.v_scale = _ops.calibrate(v_new)
        layer.calibrated = True

    def _attend(self, layer_idx, query, key, value, attention_mask, scaling, sliding_window):
        """Write the step's new K/V of one layer and attend: query [B, Hq, q_len, D] -> [B, q_len, Hq, D]."""
        batch, num_qo_heads, q_len, head_dim = (int(s) for s in query.shape)
        if query.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"kvq attention: query: expected bfloat16 or float16, got {query.dtype}")
        if int(key.shape[0]) != batch or int(key.shape[2]) != q_len or int(key.shape[3]) != head_dim:
            raise ValueError(f"kvq attention: key: expected [{batch}, Hkv, {q_len}, {head_dim}] (the new tokens of "
                             f"the query, self-attention), got {list(key.shape)}")
        if num_qo_heads % int(key.shape[1]) != 0:
            raise ValueError(f"kvq attention: query: expected a multiple of {int(key.shape[1])} heads (GQA), got "
                             f"{num_qo_heads}")
        step = self._step(layer_idx, batch, q_len, attention_mask)
        layer = self.layers[layer_idx]
        num_tokens = batch * q_len
        k_new = key.transpose(1, 2).reshape(num_tokens, self.num_kv_heads, head_dim)
        v_new = value.transpose(1, 2).reshape(num_tokens, self.num_kv_heads, head_dim)
        if self.scales == "per_channel" and not layer.calibrated:
            self._calibrate(layer, k_new, v_new, step)
        _ops.append(k_new, v_new, step.slots, layer.k_cache, layer.v_cache, k_scale=layer.k_scale,
                    v_scale=layer.v_scale)
        window = None if not sliding_window else int(sliding_window) - 1
        block_tables = self.block_tables[:batch]
        common = dict(k_scale=layer.k_scale, v_scale=layer.v_scale, softmax_scale=scaling, local_window=window)
        if q_len == 1:
            out = _ops.paged_decode(query[:, :, 0, :], layer.k_cache, layer.v_cache, block_tables, step.kv_lens,
                                    **common)
            return out.unsqueeze(1)
        q_flat = query.transpose(1, 2).reshape(num_tokens, num_qo_heads, head_dim)
        if step.dest is None:
            out = _ops.paged_prefill(q_flat, layer.k_cache, layer.v_cache, block_tables, step.cu_q_lens, step.kv_lens,
                                     causal=True, **common)
            return out.view(batch, q_len, num_qo_heads, head_dim)
        q_packed = torch.empty((num_tokens, num_qo_heads, head_dim), dtype=query.dtype, device=query.device)
        q_packed.index_copy_(0, step.dest, q_flat)
        # Rows past cu_q_lens[B] (the padding queries) are never written by kvq: they stay zero.
        out_packed = torch.zeros_like(q_packed)
        _ops.paged_prefill(q_packed, layer.k_cache, layer.v_cache, block_tables, step.cu_q_lens, step.kv_lens,
                           causal=True, out=out_packed, **common)
        return out_packed.index_select(0, step.dest).view(batch, q_len, num_qo_heads, head_dim)


# --------------------------------------------------------------------------------------------------
# The attention and mask functions
# --------------------------------------------------------------------------------------------------

def kvq_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention function "kvq": query [B, Hq, q_len, D], key/value [B, Hkv, q_len, D] (the
    new tokens, as KvqCache.update returned them), attention_mask the 2D padding mask [B, cached + q_len]
    (or None). Returns (attn_output [B, q_len, Hq, D], None)."""
    where = f"kvq attention (layer {getattr(module, 'layer_idx', '?')})"
    if dropout:
        raise NotImplementedError(f"{where}: attention dropout = {dropout} (training) is not served: kvq is for "
                                  "inference (model.eval())")
    if kwargs.get("output_attentions"):
        raise NotImplementedError(f"{where}: output_attentions: kvq does not return attention weights (use "
                                  "attn_implementation='eager' for them)")
    for name, what in _UNSERVED_KWARGS.items():
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"{where}: {name}: {what} is not served by kvq")
    is_causal = kwargs.get("is_causal")
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    if not is_causal:
        raise NotImplementedError(f"{where}: is_causal = False: non-causal (encoder, bidirectional or cross-) "
                                  "attention is not served; kvq serves causal decoder self-attention")
    if torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad):
        raise NotImplementedError(f"{where}: autograd: kvq attention has no backward; run generation under "
                                  "torch.no_grad() or torch.inference_mode()")
    cache, layer_idx = _take_handoff(key, value)
    if cache is None:
        raise ValueError(
            f"{where}: past_key_values: expected a KvqCache (key/value must be what KvqCache.update returned), got "
            "another cache or none: pass past_key_values=KvqCache(model.config, max_batch_size, max_cache_len, "
            "device) and use_cache=True (otherwise transformers creates a DynamicCache, which kvq does not read)")
    module_layer = getattr(module, "layer_idx", None)
    if module_layer is not None and int(module_layer) != layer_idx:
        raise RuntimeError(f"{where}: the key/value came from KvqCache.update of layer {layer_idx}")
    out = cache._attend(layer_idx, query, key, value, attention_mask, scaling, kwargs.get("sliding_window"))
    return out, None


def kvq_attention_mask(batch_size=None, cache_position=None, kv_length=None, kv_offset=0, mask_function=None,
                       attention_mask=None, **kwargs):
    """transformers mask function "kvq" (AttentionMaskInterface): hands the 2D padding mask
    [batch, cached + new] (bool, or None) through to the attention function, which keeps padding out of
    the cache and applies causality (and sliding windows) itself. Custom mask patterns raise."""
    bidirectional = getattr(_masking, "bidirectional_mask_function", None)
    if bidirectional is not None and mask_function is bidirectional:
        raise NotImplementedError("kvq attention mask: bidirectional attention is not served (causal only)")
    if kwargs.get("allow_is_causal_skip", True) is False or kwargs.get("allow_is_bidirectional_skip", True) is False:
        raise NotImplementedError("kvq attention mask: this model builds a custom mask (a mask function overlay, "
                                  "block-wise or packed sequences) that kvq cannot express; kvq serves causal "
                                  "masks, sliding windows and padding")
    return attention_mask


def register():
    """Register "kvq" in transformers' AttentionInterface and AttentionMaskInterface (idempotent)."""
    AttentionInterface.register(NAME, kvq_attention_forward)
    _masking.AttentionMaskInterface.register(NAME, kvq_attention_mask)
    return NAME


def enable(model):
    """Check the model's config (raises naming what kvq does not serve), register "kvq" and switch the model
    to it. Returns the model."""
    _model_geometry(model.config, f"enable({type(model).__name__})")
    register()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(NAME)
    else:
        model.config._attn_implementation = NAME
    impl = getattr(model.config, "_attn_implementation", None)
    if impl != NAME:
        raise ValueError(f"enable({type(model).__name__}): attn_implementation: expected {NAME!r} after switching, "
                         f"got {impl!r} (the model does not dispatch its attention through AttentionInterface)")
    return model


def dense_cache_bytes(cache):
    """Bytes held by a transformers cache's K/V tensors (DynamicCache, StaticCache, ...); a KvqCache reports
    kv_bytes()."""
    if isinstance(cache, KvqCache):
        return cache.kv_bytes()
    tensors = []
    layers = getattr(cache, "layers", None)
    if layers is not None:
        for layer in layers:
            tensors += [getattr(layer, "keys", None), getattr(layer, "values", None)]
    else:
        tensors += list(getattr(cache, "key_cache", [])) + list(getattr(cache, "value_cache", []))
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


register()
