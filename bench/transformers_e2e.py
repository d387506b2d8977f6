#!/usr/bin/env python3
"""End-to-end generate() under Hugging Face transformers: kvq (KvqCache + attn_implementation="kvq")
against attn_implementation="sdpa" with transformers' bf16 DynamicCache; same model, same weights,
same process, same GPU.

    python3 bench/transformers_e2e.py --out bench/results/DATE_h200_transformers_e2e.json
    python3 bench/transformers_e2e.py --quick --out /tmp/transformers_e2e_quick.json
    python3 bench/transformers_e2e.py --profile ...      # adds where a decode step's time goes, by op

Default workload: a Llama-3-8B-shaped model (32 layers, hidden 4096, Hq 32 / Hkv 8, head_dim 128,
intermediate 14336, vocab 128256) with random bf16 weights, batch 32 x 2048-token prompts + 256 new tokens,
greedy, every row generating all 256 tokens. --quick: 4 layers, batch 4 x 256 + 32.

Per implementation:
  prefill_ms           generate(max_new_tokens=1): the prompt forward and the first token
  decode_ms_per_token  (generate(max_new_tokens=N) - the above) / (N - 1): one decode step of the whole batch
  tokens_per_s         batch * N / generate(max_new_tokens=N) seconds: new tokens per second, end to end
  kv_bytes             the KV cache at the end: KvqCache.kv_bytes() (int8 pages and scales, its capacity)
                       or the bytes of the DynamicCache's bf16 tensors
  peak_mem_bytes       torch.cuda.max_memory_allocated() during that generate

The JSON (--out) holds gpu, date, versions, the workload and rows of {config, impl, ...}. Progress goes to
stderr. Random weights make the generated text meaningless but the work per token is the real model's.
"""
import argparse
import datetime
import json
import os
import sys
import time


def log(msg):
    print(f"[transformers_e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", help="write the JSON results here")
    p.add_argument("--quick", action="store_true", help="a small run (4 layers, batch 4 x 256 + 32)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--prompt-len", type=int, default=None)
    p.add_argument("--new-tokens", type=int, default=None)
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=None)
    p.add_argument("--vocab", type=int, default=None)
    p.add_argument("--page-size", type=int, default=16)
    p.add_argument("--scales", choices=["per_token", "per_channel"], default="per_token")
    p.add_argument("--impls", default="sdpa,kvq", help="comma-separated: sdpa, kvq")
    p.add_argument("--repeats", type=int, default=1, help="timed generate() calls per measurement (median)")
    p.add_argument("--ragged", action="store_true", help="left-padded prompts of lengths in [prompt_len/2, prompt_len]")
    p.add_argument("--profile", action="store_true", help="profile 8 decode steps per impl (torch.profiler)")
    a = p.parse_args()
    quick = a.quick
    a.batch = a.batch or (4 if quick else 32)
    a.prompt_len = a.prompt_len or (256 if quick else 2048)
    a.new_tokens = a.new_tokens or (32 if quick else 256)
    a.layers = a.layers or (4 if quick else 32)
    a.intermediate = a.intermediate or (4096 if quick else 14336)
    a.vocab = a.vocab or (32000 if quick else 128256)
    if a.new_tokens < 2:
        p.error("--new-tokens: expected >= 2 (decode is timed from the difference with a 1-token generate)")
    return a


def main():
    a = parse_args()
    import torch
    import transformers

    import kvq
    from kvq.integrations import transformers as kvq_hf

    if not torch.cuda.is_available():
        log("no CUDA device: this benchmark runs on the GPU")
        return 2
    if not kvq.cuda_available():
        log(f"kvq's CUDA backend is not available (cuda_built={kvq.cuda_built()})")
        return 2
    dev = torch.device("cuda")
    kvq_hf.register()
    cfg = transformers.LlamaConfig(
        hidden_size=a.hidden, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads, head_dim=a.head_dim,
        intermediate_size=a.intermediate, num_hidden_layers=a.layers, vocab_size=a.vocab,
        max_position_embeddings=max(8192, a.prompt_len + a.new_tokens), rms_norm_eps=1e-5, bos_token_id=1,
        eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    config_name = (f"llama L{a.layers} h{a.hidden} Hq{a.heads}/Hkv{a.kv_heads} D{a.head_dim} ffn{a.intermediate} "
                   f"vocab{a.vocab}, batch {a.batch} x {a.prompt_len} + {a.new_tokens}"
                   f"{' ragged' if a.ragged else ''}")
    log(f"building {config_name} (random bf16 weights, on the GPU)")
    t0 = time.perf_counter()
    with torch.device(dev):
        try:
            model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation="sdpa")
        except TypeError:
            model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16,
                                                                  attn_implementation="sdpa")
    model = model.to(device=dev, dtype=torch.bfloat16).eval()
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = None
    log(f"model ready in {time.perf_counter() - t0:.1f} s, {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B "
        "parameters")

    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(3, a.vocab, (a.batch, a.prompt_len), generator=g)
    mask = torch.ones_like(ids)
    if a.ragged:
        lens = torch.randint(a.prompt_len // 2, a.prompt_len + 1, (a.batch,), generator=g)
        for b, n in enumerate(lens.tolist()):
            ids[b, : a.prompt_len - n] = 0
            mask[b, : a.prompt_len - n] = 0
    ids, mask = ids.to(dev), mask.to(dev)

    def run(impl, new_tokens, inputs=None, **gen_kwargs):
        x, m = inputs or (ids, mask)
        extra = {}
        cache = None
        if impl == "kvq":
            cache = kvq_hf.KvqCache(model.config, x.shape[0], x.shape[1] + new_tokens, dev,
                                    page_size=a.page_size, scales=a.scales)
            extra["past_key_values"] = cache
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=x, attention_mask=m, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=0, return_dict_in_generate=True, **extra,
                                 **gen_kwargs)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        kv_bytes = kvq_hf.dense_cache_bytes(out.past_key_values if cache is None else cache)
        peak = torch.cuda.max_memory_allocated()
        assert out.sequences.shape == (x.shape[0], x.shape[1] + new_tokens)
        del out, cache
        return seconds, kv_bytes, peak

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2]

    rows = []
    for impl in [s.strip() for s in a.impls.split(",") if s.strip()]:
        if impl not in ("sdpa", "kvq"):
            log(f"--impls: unknown {impl!r} (sdpa, kvq)")
            return 2
        model.set_attn_implementation(impl)
        log(f"{impl}: warm-up")
        run(impl, 4, (ids[:, : min(64, a.prompt_len)], mask[:, : min(64, a.prompt_len)]))
        log(f"{impl}: prefill (generate, 1 new token) x {a.repeats}")
        prefill = median([run(impl, 1)[0] for _ in range(a.repeats)])
        log(f"{impl}: prefill {prefill * 1e3:.1f} ms; full generate ({a.new_tokens} new tokens) x {a.repeats}")
        fulls = [run(impl, a.new_tokens) for _ in range(a.repeats)]
        total = median([f[0] for f in fulls])
        kv_bytes, peak = fulls[-1][1], fulls[-1][2]
        row = {"config": config_name, "impl": impl if impl == "sdpa" else f"kvq ({a.scales}, page {a.page_size})",
               "prefill_ms": prefill * 1e3, "decode_ms_per_token": (total - prefill) * 1e3 / (a.new_tokens - 1),
               "tokens_per_s": a.batch * a.new_tokens / total, "generate_s": total, "kv_bytes": kv_bytes,
               "peak_mem_bytes": peak}
        if a.profile:
            row["profile"] = profile(torch, transformers, impl, run)
        log(f"{impl}: {json.dumps({k: v for k, v in row.items() if k != 'profile'})}")
        rows.append(row)
        torch.cuda.empty_cache()
    model.set_attn_implementation("sdpa")

    by_impl = {r["impl"].split()[0]: r for r in rows}
    if "sdpa" in by_impl and "kvq" in by_impl:
        s, k = by_impl["sdpa"], by_impl["kvq"]
        log(f"kvq / sdpa: tokens/s x{k['tokens_per_s'] / s['tokens_per_s']:.3f}, prefill x"
            f"{s['prefill_ms'] / k['prefill_ms']:.3f} faster, decode step x"
            f"{s['decode_ms_per_token'] / k['decode_ms_per_token']:.3f} faster, KV bytes x"
            f"{k['kv_bytes'] / s['kv_bytes']:.3f}")
    result = {
        "gpu": torch.cuda.get_device_name(dev),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "kvq": kvq.__version__},
        "workload": {"batch": a.batch, "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "ragged": a.ragged,
                     "greedy": True, "repeats": a.repeats},
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text + "\n")
        log(f"wrote {a.out}")
    print(text)
    return 0


def profile(torch, transformers, impl, run, steps=8):
    """Device and CPU time by op over `steps` decode steps (the prompt's forward excluded: a logits
    processor starts the profiler after the first token): the kvq ops (kvq::append, kvq::paged_decode)
    against everything else."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    prof = torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])

    class Window(transformers.LogitsProcessor):
        def __init__(self):
            self.calls = 0

        def __call__(self, input_ids, scores):
            if self.calls == 0:
                torch.cuda.synchronize()
                prof.start()
            elif self.calls == steps:
                torch.cuda.synchronize()
                prof.stop()
            self.calls += 1
            return scores

    log(f"{impl}: profiling {steps} decode steps")
    run(impl, steps + 2, logits_processor=transformers.LogitsProcessorList([Window()]))
    events = prof.key_averages()

    def device_us(e):
        v = getattr(e, "device_time_total", None)
        return float(v if v is not None else getattr(e, "cuda_time_total", 0.0))

    ops = [{"op": e.key, "calls": int(e.count), "cpu_us": float(e.cpu_time_total), "device_us": device_us(e)}
           for e in events if e.key.startswith(("kvq::", "aten::"))]
    ops.sort(key=lambda r: -r["device_us"])
    kvq_ops = [r for r in ops if r["op"].startswith("kvq::")]
    summary = {"steps": steps, "kvq_ops": kvq_ops, "top_ops": ops[:15],
               "kvq_device_us_per_step": sum(r["device_us"] for r in kvq_ops) / steps,
               "kvq_cpu_us_per_step": sum(r["cpu_us"] for r in kvq_ops) / steps}
    for r in ops[:12]:
        log(f"  {r['op']}: {r['calls']} calls, device {r['device_us'] / 1e3 / steps:.2f} ms/step, "
            f"cpu {r['cpu_us'] / 1e3 / steps:.2f} ms/step")
    return summary


if __name__ == "__main__":
    sys.exit(main())
