#!/usr/bin/env python3
"""End-to-end generate() under Hugging Face transformers: kvq (KvqCache + attn_implementation="kvq")
against attn_implementation="sdpa" with transformers' bf16 caches; same model, same weights, same
process, same GPU, every implementation timed in steady state.

    python3 bench/transformers_e2e.py --out bench/results/DATE_h200_transformers_e2e.json
    python3 bench/transformers_e2e.py --quick --out /tmp/transformers_e2e_quick.json
    python3 bench/transformers_e2e.py --quick --impls sdpa,sdpa_static,sdpa_static_compile,kvq   # every peer
    python3 bench/transformers_e2e.py --profile ...      # adds where a decode step's time goes, by op

Default workload: a Llama-3-8B-shaped model (32 layers, hidden 4096, Hq 32 / Hkv 8, head_dim 128,
intermediate 14336, vocab 128256) with random bf16 weights, batch 32 x 2048-token prompts + 256 new tokens,
greedy, every row generating all 256 tokens. --quick: 4 layers, batch 4 x 256 + 32.

Implementations (--impls, comma-separated, in this order by default: sdpa,kvq):
  sdpa                 attn_implementation="sdpa", transformers' default bf16 DynamicCache, eager (the
                       like-for-like peer: kvq runs eager too)
  sdpa_static          "sdpa" with cache_implementation="static" (bf16 StaticCache), torch.compile disabled
  sdpa_static_compile  "sdpa" with cache_implementation="static" and transformers' automatic torch.compile
                       of the decode step (its default CompileConfig: inductor, "reduce-overhead", i.e. CUDA
                       graphs); the compile happens in this implementation's warm-up. kvq cannot take this
                       path (KvqCache.is_compileable is False). Optional: the compile takes tens of seconds.
  kvq                  attn_implementation="kvq" with a KvqCache (--scales, --page-size), eager

Timing, so that no implementation pays another's start-up and none always runs first:
  1. a global warm-up: one full generate() with plain sdpa at the workload's shapes (CUDA context, lazy
     module loading, cuBLAS handles and heuristics for every GEMM shape, GPU clocks); its time is kept as
     cold_start_s;
  2. per implementation, --warmup rounds of the same generate() calls that are timed (full length, then
     1 new token), same shapes; their times are kept as warmup_s (for sdpa_static_compile: the compile);
  3. --repeats timed rounds; round r runs the implementations in the order rotated by r (with two, they
     alternate who goes first); each implementation runs generate(max_new_tokens=1) then
     generate(max_new_tokens=N), each between torch.cuda.synchronize() calls.
Reported per implementation: the median over the rounds, with min and max (and every sample) in the JSON:
  prefill_ms           generate(max_new_tokens=1): the prompt forward and the first token
  decode_ms_per_token  per round (generate(N) - generate(1)) / (N - 1): one decode step of the whole batch
  tokens_per_s         batch * N / generate(N) seconds: new tokens per second, end to end
  generate_s           generate(max_new_tokens=N) seconds
  kv_bytes             the KV cache at the end: KvqCache.kv_bytes() (int8 pages and scales, its capacity)
                       or the bytes of the DynamicCache's / StaticCache's bf16 tensors
  peak_mem_bytes       torch.cuda.max_memory_allocated() during that generate; resident_bytes is what was
                       allocated when it started (weights, and transformers' StaticCache once a static peer
                       has run: generate() keeps it on the model)
  greedy               tokens of the first full generate() identical to the reference implementation's
                       (sdpa when it runs, else the first), per position and as common prefixes, and whether
                       every timed round reproduced the implementation's own tokens. With random weights the
                       logits are nearly flat, so two correct implementations part ways after a few tokens:
                       this is a smoke check, the accuracy verdict is tests/python/test_transformers.py.
The KvqCache is built inside the timed region (a new one per generate() call, as the docs advise); the
DynamicCache is built by generate() itself, the StaticCache is kept and reset by generate().

The JSON (--out, rewritten after every round so that a run stopped by a time limit keeps what it
measured; printed to stdout without --out) holds gpu, date, versions, the workload, the timing protocol
and rows of {config, impl, ...}. Progress and the summary go to stderr. Random weights make the generated text meaningless but the work per token is the real
model's. --max-seconds stops starting new timed rounds past that many seconds since the start (at least
one round always runs).
"""
import argparse
import datetime
import json
import os
import sys
import time
import traceback

_T0 = time.perf_counter()

IMPL_NAMES = ("sdpa", "sdpa_static", "sdpa_static_compile", "kvq")


def log(msg):
    print(f"[transformers_e2e {time.strftime('%H:%M:%S')} +{time.perf_counter() - _T0:.0f}s] {msg}", file=sys.stderr,
          flush=True)


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
    p.add_argument("--impls", default="sdpa,kvq",
                   help=f"comma-separated, any of {', '.join(IMPL_NAMES)} (default sdpa,kvq; see the module doc)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed rounds (median, min, max reported); default 5 with --quick, else 3")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed rounds per implementation before timing (same calls as the timed ones)")
    p.add_argument("--max-seconds", type=float, default=0.0,
                   help="start no timed round after this many seconds since the start (0: no limit; >= 1 round)")
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
    a.repeats = a.repeats if a.repeats is not None else (5 if quick else 3)
    if a.new_tokens < 2:
        p.error("--new-tokens: expected >= 2 (decode is timed from the difference with a 1-token generate)")
    if a.repeats < 1:
        p.error("--repeats: expected >= 1")
    if a.warmup < 1:
        p.error("--warmup: expected >= 1 (an implementation timed cold measures its start-up, not its speed)")
    a.impl_list = [s.strip() for s in a.impls.split(",") if s.strip()]
    for impl in a.impl_list:
        if impl not in IMPL_NAMES:
            p.error(f"--impls: unknown {impl!r} (expected any of {', '.join(IMPL_NAMES)})")
    if not a.impl_list or len(set(a.impl_list)) != len(a.impl_list):
        p.error(f"--impls: expected distinct names among {', '.join(IMPL_NAMES)}, got {a.impls!r}")
    return a


def stats(xs):
    """median (the mean of the two middle values for an even count), min, max."""
    s = sorted(xs)
    n = len(s)
    med = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
    return med, s[0], s[-1]


def main():
    a = parse_args()
    import torch
    import transformers

    try:
        import kvq
        from kvq.integrations import transformers as kvq_hf
    except ImportError as e:
        log(f"kvq is not importable ({e}): put the built package on PYTHONPATH (tools/device_prep.sh builds "
            ".devbin/py, tests/python/run.sh builds <build>/python/package)")
        return 2

    if not torch.cuda.is_available():
        log("no CUDA device visible to torch: this benchmark runs on the GPU")
        return 2
    if "kvq" in a.impl_list:
        try:
            ok = kvq.cuda_available()
        except ImportError as e:  # the package without its compiled extension
            log(f"kvq's compiled extension is not importable ({e}): build it (tools/device_prep.sh)")
            return 2
        if not ok:
            log(f"kvq's CUDA backend is not available (cuda_built={kvq.cuda_built()}): build kvq with CUDA")
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

    specs = {
        "sdpa": {"attn": "sdpa", "label": "sdpa (DynamicCache, eager)", "gen": {}},
        "sdpa_static": {"attn": "sdpa", "label": "sdpa (StaticCache, eager)",
                        "gen": {"cache_implementation": "static", "disable_compile": True}},
        "sdpa_static_compile": {"attn": "sdpa", "label": "sdpa (StaticCache, torch.compile reduce-overhead)",
                                "gen": {"cache_implementation": "static"}},
        "kvq": {"attn": "kvq", "label": f"kvq ({a.scales}, page {a.page_size}, eager)", "gen": {}},
    }

    def dynamo_graphs():
        """torch.compile's count of graphs compiled so far (None where torch does not say)."""
        try:
            from torch._dynamo.utils import counters
            return int(counters["stats"]["unique_graphs"])
        except Exception:  # noqa: BLE001 - a diagnostic only
            return None

    def switch(impl):
        attn = specs[impl]["attn"]
        if getattr(model.config, "_attn_implementation", None) != attn:
            model.set_attn_implementation(attn)

    def run(impl, new_tokens, **gen_kwargs):
        """One generate() of the workload, timed between synchronizations. Returns a dict of seconds,
        kv_bytes, peak and resident bytes, and the generated tokens (CPU)."""
        switch(impl)
        extra = dict(specs[impl]["gen"])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
        t = time.perf_counter()
        cache = None
        if impl == "kvq":
            cache = kvq_hf.KvqCache(model.config, ids.shape[0], ids.shape[1] + new_tokens, dev,
                                    page_size=a.page_size, scales=a.scales)
            extra["past_key_values"] = cache
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                                 return_dict_in_generate=True, **extra, **gen_kwargs)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        peak = torch.cuda.max_memory_allocated()
        kv_bytes = kvq_hf.dense_cache_bytes(out.past_key_values if cache is None else cache)
        if tuple(out.sequences.shape) != (ids.shape[0], ids.shape[1] + new_tokens):
            raise RuntimeError(f"{impl}: generate returned sequences of shape {list(out.sequences.shape)}, expected "
                               f"{[ids.shape[0], ids.shape[1] + new_tokens]}")
        tokens = out.sequences[:, ids.shape[1]:].cpu()
        del out, cache
        return {"s": seconds, "kv_bytes": kv_bytes, "peak": peak, "resident": resident, "tokens": tokens}

    impls = list(a.impl_list)
    failed = {}
    warm = {}
    samples = {impl: [] for impl in impls}  # per round: (prefill run, full run)
    result = {
        "gpu": torch.cuda.get_device_name(dev),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "kvq": kvq.__version__},
        "workload": {"config": config_name, "batch": a.batch, "prompt_len": a.prompt_len,
                     "new_tokens": a.new_tokens, "ragged": a.ragged, "greedy": True},
        "timing": {"protocol": "global warm-up (sdpa, full generate), then per impl warm-up rounds of the timed "
                               "calls, then timed rounds with the impl order rotated each round; median reported",
                   "warmup_rounds": a.warmup, "repeats_requested": a.repeats, "repeats_done": 0,
                   "max_seconds": a.max_seconds or None},
        "impls_requested": impls,
        "rows": [],
    }

    def write(final=False):
        result["rows"] = build_rows()
        result["failed"] = failed
        result["elapsed_s"] = time.perf_counter() - _T0
        result["complete"] = final
        if a.out:
            os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
            tmp = a.out + ".tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps(result, indent=1) + "\n")
            os.replace(tmp, a.out)

    ref_impl = "sdpa" if "sdpa" in impls else impls[0]

    def greedy_figures(impl):
        w = warm.get(impl)
        r = warm.get(ref_impl)
        if w is None:
            return None
        own = w["tokens"]
        fig = {"vs": ref_impl, "tokens": int(own.numel()), "rows": int(own.shape[0]),
               "repeats_reproduce_own_tokens": all(bool(torch.equal(full["tokens"], own))
                                                   for _, full in samples[impl])}
        if r is not None and impl != ref_impl:
            eq = own == r["tokens"]
            fig.update({"identical_tokens": int(eq.sum()),
                        "identical_prefix_tokens": int(eq.long().cumprod(dim=1).sum()),
                        "identical_rows": int(eq.all(dim=1).sum())})
        return fig

    def build_rows():
        rows = []
        for impl in impls:
            runs = samples[impl]
            if not runs:
                continue
            pre = [p["s"] for p, _ in runs]
            full = [f["s"] for _, f in runs]
            dec = [(f["s"] - p["s"]) / (a.new_tokens - 1) for p, f in runs]
            tps = [a.batch * a.new_tokens / f["s"] for _, f in runs]
            (pm, pl, ph), (fm, fl, fh), (dm, dl, dh), (tm, tl, th) = stats(pre), stats(full), stats(dec), stats(tps)
            last = runs[-1][1]
            row = {"config": config_name, "impl": specs[impl]["label"], "key": impl,
                   "attn_implementation": specs[impl]["attn"], "generate_kwargs": specs[impl]["gen"],
                   "prefill_ms": pm * 1e3, "prefill_ms_min": pl * 1e3, "prefill_ms_max": ph * 1e3,
                   "decode_ms_per_token": dm * 1e3, "decode_ms_per_token_min": dl * 1e3,
                   "decode_ms_per_token_max": dh * 1e3,
                   "tokens_per_s": tm, "tokens_per_s_min": tl, "tokens_per_s_max": th,
                   "generate_s": fm, "generate_s_min": fl, "generate_s_max": fh,
                   "generate_spread": (fh - fl) / fm if fm > 0 else None,
                   "repeats": len(runs), "kv_bytes": last["kv_bytes"],
                   "peak_mem_bytes": max(f["peak"] for _, f in runs), "resident_bytes": last["resident"],
                   "warmup_s": warm[impl]["warmup_s"] if impl in warm else None,
                   "samples": {"prefill_s": pre, "generate_s": full}}
            if impl == "sdpa_static_compile":
                # Graphs compiled after this peer's warm-up mean recompiles inside the timed rounds.
                row["compiled"] = getattr(model, "_compiled_call", None) is not None
                row["dynamo_graphs_after_warmup"] = warm[impl]["dynamo_graphs"] if impl in warm else None
                row["dynamo_graphs_at_end"] = dynamo_graphs()
            greedy = greedy_figures(impl)
            if greedy is not None:
                row["greedy"] = greedy
            if impl in profiles:
                row["profile"] = profiles[impl]
            rows.append(row)
        return rows

    profiles = {}

    # 1. Global warm-up: the process's cold start lands here, in no implementation's figures.
    log(f"global warm-up: sdpa generate ({a.batch} x {a.prompt_len} + {a.new_tokens}), cold start")
    model.set_attn_implementation("sdpa")
    t = time.perf_counter()
    try:
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=a.new_tokens,
                           min_new_tokens=a.new_tokens, do_sample=False, pad_token_id=0)
        torch.cuda.synchronize()
        result["timing"]["cold_start_s"] = time.perf_counter() - t
        log(f"global warm-up: {result['timing']['cold_start_s']:.2f} s")
    except Exception as e:  # noqa: BLE001 - the per-implementation warm-ups still run (and report)
        log(f"global warm-up FAILED: {type(e).__name__}: {e}")
        traceback.print_exc(file=sys.stderr)
        failed["global warm-up"] = f"{type(e).__name__}: {e}"

    # 2. Per implementation warm-up: the very calls that are timed, same shapes.
    for impl in list(impls):
        log(f"{impl}: warm-up x {a.warmup} (generate {a.new_tokens} new tokens, then 1)")
        t = time.perf_counter()
        try:
            first = None
            for _ in range(a.warmup):
                full = run(impl, a.new_tokens)
                run(impl, 1)
                first = first or full
            warm[impl] = {"tokens": first["tokens"], "warmup_s": time.perf_counter() - t,
                          "dynamo_graphs": dynamo_graphs() if impl == "sdpa_static_compile" else None}
            log(f"{impl}: warm-up {warm[impl]['warmup_s']:.2f} s")
        except Exception as e:  # noqa: BLE001 - one failing peer must not lose the others' figures
            log(f"{impl}: FAILED in warm-up: {type(e).__name__}: {e}")
            traceback.print_exc(file=sys.stderr)
            failed[impl] = f"warm-up: {type(e).__name__}: {e}"
            impls.remove(impl)
            torch.cuda.empty_cache()
    write()

    # 3. Timed rounds, the order rotated every round.
    for r in range(a.repeats):
        if r > 0 and a.max_seconds and time.perf_counter() - _T0 > a.max_seconds:
            log(f"--max-seconds {a.max_seconds:g} reached: stopping after {r} timed round(s) of {a.repeats}")
            break
        if not impls:
            break
        order = impls[r % len(impls):] + impls[: r % len(impls)]
        parts = []
        for impl in order:
            try:
                pre = run(impl, 1)
                full = run(impl, a.new_tokens)
            except Exception as e:  # noqa: BLE001
                log(f"{impl}: FAILED in round {r + 1}: {type(e).__name__}: {e}")
                traceback.print_exc(file=sys.stderr)
                failed[impl] = f"round {r + 1}: {type(e).__name__}: {e}"
                impls.remove(impl)
                continue
            samples[impl].append((pre, full))
            parts.append(f"{impl} prefill {pre['s'] * 1e3:.1f} ms, generate {full['s']:.3f} s")
        result["timing"]["repeats_done"] = r + 1
        log(f"round {r + 1}/{a.repeats} ({' then '.join(order)}): " + "; ".join(parts))
        write()

    if a.profile:
        for impl in impls:
            try:
                profiles[impl] = profile(torch, transformers, impl, run)
            except Exception as e:  # noqa: BLE001
                log(f"{impl}: profile FAILED: {type(e).__name__}: {e}")
    model.set_attn_implementation("sdpa")

    rows = build_rows()
    for row in rows:
        if row.get("dynamo_graphs_after_warmup") != row.get("dynamo_graphs_at_end"):
            log(f"{row['key']}: WARNING: torch.compile compiled graphs during the timed rounds "
                f"({row['dynamo_graphs_after_warmup']} -> {row['dynamo_graphs_at_end']}): its times include compiles")
        log(f"{row['key']}: " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                                            if k not in ("profile", "samples", "config", "generate_kwargs")}))
    by_impl = {row["key"]: row for row in rows}
    if ref_impl in by_impl:
        s = by_impl[ref_impl]
        for key, k in by_impl.items():
            if key == ref_impl:
                continue
            log(f"{key} / {ref_impl} (medians of {k['repeats']} and {s['repeats']} rounds): tokens/s "
                f"x{k['tokens_per_s'] / s['tokens_per_s']:.3f}, prefill x{s['prefill_ms'] / k['prefill_ms']:.3f} "
                f"faster, decode step x{s['decode_ms_per_token'] / k['decode_ms_per_token']:.3f} faster, KV bytes "
                f"x{k['kv_bytes'] / s['kv_bytes']:.3f}")
    for key, why in failed.items():
        log(f"{key}: FAILED ({why})")
    write(final=True)
    if a.out:
        log(f"wrote {a.out}")
    else:
        print(json.dumps(result, indent=1))
    return 1 if failed else 0


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
