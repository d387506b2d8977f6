# bench/tc_sdpa_peer.py — the dense peers of the tensor-core prefill timing: torch SDPA (flash and
# cuDNN backends) on B1 Hq32 (K/V expanded from Hkv8) seq 8192 D128 causal bf16, CUDA events,
# median of 20 after warm-up. TFLOP/s counts visible pairs only: 4*Hq*D*S*(S+1)/2.
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

def bench(fn, iters=20, warmup=3):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]

print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
for (S, D) in [(8192, 128), (8192, 64), (8192, 256)]:
    Hq, Hkv = 32, 8
    q = torch.randn(1, Hq, S, D, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, Hkv, S, D, device="cuda", dtype=torch.bfloat16).repeat_interleave(Hq // Hkv, dim=1)
    v = torch.randn(1, Hkv, S, D, device="cuda", dtype=torch.bfloat16).repeat_interleave(Hq // Hkv, dim=1)
    flops = 4 * Hq * D * S * (S + 1) / 2
    for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
        try:
            with sdpa_kernel(be):
                ms = bench(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
            print(f"sdpa {name:6s} B1 S{S} D{D} causal: {ms:.3f} ms  {flops / ms * 1e-9:.1f} TFLOP/s")
        except Exception as e:  # backend unavailable for this shape
            print(f"sdpa {name} D{D}: unavailable ({type(e).__name__}: {str(e)[:80]})")
