#!/usr/bin/env python3
"""bench/report.py — turns one bench/peers.py results file into the tables of docs/performance.md
and (where matplotlib is installed) the plot docs/peers.png.

usage: python3 bench/report.py RESULTS.json [MORE.json ...] [--md OUT.md] [--png OUT.png]

With several files (runs on the same GPU), a shape measured in a later file replaces its rows
from the earlier ones, and the header names every run with its ceilings.

The markdown has one table for prefill (TFLOP/s, every peer, the best peer and kvq's ratio to it)
and one for decode (time and GB/s, the same), and the ceilings of the run. The plot draws every
shape's kvq rows and best peer as a fraction of the run's measured ceilings (bf16 GEMM TFLOP/s
for prefill, read bandwidth for decode), so compute- and memory-bound shapes share one axis.
"""
import argparse
import json
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def by_shape(rows):
    out = {}
    for r in rows:
        out.setdefault(r["shape"], {})[r["peer"]] = r
    return out


def best_peer(peers):
    dense = {k: v for k, v in peers.items() if not k.startswith("kvq")}
    if not dense:
        return None, None
    name = min(dense, key=lambda k: dense[k]["ms"])
    return name, dense[name]


def fmt(x, nd=1):
    return "" if x is None else f"{x:.{nd}f}"


def prefill_table(res):
    shapes = by_shape([r for r in res["rows"] if "tflops" in r])
    cols = ["kvq_fused", "kvq_dequant", "kvq_bf16cache", "mojo_design_torch", "sdpa_flash", "sdpa_cudnn"]
    if any(r["peer"] == "kvq_int8" for r in res["rows"]):  # compute="int8" (runs from 2026-12-01 23:51 on)
        cols.insert(3, "kvq_int8")
    lines = ["| shape | " + " | ".join(cols) + " | best peer | kvq_fused / best | kvq_bf16cache / best |",
             "|---" * (len(cols) + 4) + "|"]
    for shape, peers in shapes.items():
        bname, b = best_peer(peers)
        cells = [fmt(peers[c]["tflops"]) if c in peers else "" for c in cols]

        def ratio(k):
            return f"{b['ms'] / peers[k]['ms']:.2f}x" if b and k in peers else ""
        lines.append(f"| {shape} | " + " | ".join(cells) + f" | {bname or ''} | {ratio('kvq_fused')} | {ratio('kvq_bf16cache')} |")
    return "\n".join(lines)


def decode_table(res):
    shapes = by_shape([r for r in res["rows"] if "gbps" in r])
    lines = ["| shape | kvq_decode ms (GB/s) | other kvq kernels, same call (ms) | kvq_decode_bf16cache ms | best peer | best peer ms (GB/s) | kvq_decode / best (time) | kvq_decode_bf16cache / best |",
             "|---|---|---|---|---|---|---|---|"]
    for shape, peers in shapes.items():
        bname, b = best_peer(peers)

        def cell(k, bw=False):
            if k not in peers:
                return ""
            r = peers[k]
            return f"{r['ms']:.4f} ({r['gbps']:.0f})" if bw else f"{r['ms']:.4f}"

        def ratio(k):
            return f"{b['ms'] / peers[k]['ms']:.2f}x" if b and k in peers else ""
        k = "kvq_decode" if "kvq_decode" in peers else "kvq_prefill"  # q_len > 1: multi-token, through paged_prefill
        name = shape if k == "kvq_decode" else shape + " (kvq_prefill)"
        # Every other kvq row of the shape over the int8 cache (forced routes and kernel variants:
        # kvq_decode_split, kvq_decode_v5, kvq_prefill_prefill_kernel, ...), by name.
        others = "; ".join(f"{n[len('kvq_'):]} {peers[n]['ms']:.4f}" for n in sorted(peers)
                           if n.startswith("kvq_") and n not in (k, k + "_bf16cache"))
        lines.append(f"| {name} | {cell(k, True)} | {others} | {cell(k + '_bf16cache')} | "
                     f"{bname or ''} | {cell(bname, True) if bname else ''} | {ratio(k)} | {ratio(k + '_bf16cache')} |")
    return "\n".join(lines)


def merge(results, names, decode_from_last=False):
    """Rows of later runs replace the same shapes of earlier ones; ceilings of the first run.
    decode_from_last: decode rows only from the last file (earlier runs timed another decode kernel)."""
    rows, runs = [], []
    for k, (res, name) in enumerate(zip(results, names)):
        if decode_from_last and k < len(results) - 1:
            res = dict(res, rows=[r for r in res["rows"] if "gbps" not in r])
        shapes = {r["shape"] for r in res["rows"]}
        rows = [r for r in rows if r["shape"] not in shapes] + [dict(r, run=name) for r in res["rows"]]
        runs.append(dict(file=name, gpu=res["gpu"], date=res["date"], ceilings=res.get("ceilings", {})))
    out = dict(results[0])
    out["rows"], out["runs"] = rows, runs
    return out


def markdown(res):
    heads = []
    for run in res.get("runs", [dict(file="", gpu=res["gpu"], date=res["date"], ceilings=res.get("ceilings", {}))]):
        c = run["ceilings"]
        heads.append(f"- `{run['file']}`: **{run['gpu']}**, {run['date']}; ceilings measured in the same run: device copy "
                     f"{fmt(c.get('copy_tbps'), 2)} TB/s (read + write), read {fmt(c.get('read_tbps'), 2)} TB/s, bf16 GEMM "
                     f"{fmt(c.get('bf16_gemm_tflops'), 0)} TFLOP/s; shapes: "
                     + ", ".join(sorted({r['shape'] for r in res['rows'] if r.get('run', '') == run['file']})))
    head = "Runs (a shape's rows come from the last run that measured it):\n" + "\n".join(heads)
    return "\n\n".join([head, "### Prefill (TFLOP/s of visible scores)", prefill_table(res),
                        "### Decode (ms; GB/s of the bytes each peer must move)", decode_table(res)]) + "\n"


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    c = res["ceilings"]
    pre = by_shape([r for r in res["rows"] if "tflops" in r])
    dec = by_shape([r for r in res["rows"] if "gbps" in r])
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5), gridspec_kw=dict(width_ratios=[len(pre) or 1, len(dec) or 1]))
    for ax, shapes, key, ceil, unit, kvqs in (
            (axes[0], pre, "tflops", c["bf16_gemm_tflops"], "of bf16 GEMM TFLOP/s", ["kvq_fused", "kvq_bf16cache"]),
            (axes[1], dec, "gbps", c["read_tbps"] * 1e3, "of read bandwidth", ["kvq_decode", "kvq_decode_bf16cache"])):
        names = list(shapes)
        xs = range(len(names))
        series = kvqs + ["best peer"]
        w = 0.8 / len(series)
        for j, s in enumerate(series):
            vals = []
            for n in names:
                peers = shapes[n]
                r = best_peer(peers)[1] if s == "best peer" else peers.get(s)
                vals.append((r[key] / ceil) if r else 0)
            bars = ax.bar([x + (j - (len(series) - 1) / 2) * w for x in xs], vals, w, label=s)
            if j == 0:  # kvq's speed-up in time over the best peer, above its bar
                for bar, n in zip(bars, names):
                    peers = shapes[n]
                    b, r = best_peer(peers)[1], peers.get(s)
                    if b and r:
                        ax.annotate(f"{b['ms'] / r['ms']:.2f}x", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                    ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("fraction " + unit)
        ax.legend(fontsize=8)
    axes[0].set_title("prefill (label: kvq_fused time speed-up over the best peer)")
    axes[1].set_title("decode (bytes each peer moves; label: kvq_decode speed-up in time)")
    fig.suptitle(f"kvq vs the best peer per shape, {res['gpu']} (" + ", ".join(r["date"] for r in res.get("runs", [res])) + ")")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="+")
    ap.add_argument("--md", default="")
    ap.add_argument("--png", default="")
    ap.add_argument("--decode-from-last", action="store_true",
                    help="decode rows only from the last results file (the earlier ones timed an older decode kernel)")
    a = ap.parse_args()
    import os
    res = merge([load(p) for p in a.results], [os.path.basename(p) for p in a.results], a.decode_from_last)
    md = markdown(res)
    if a.md:
        with open(a.md, "w") as f:
            f.write(md)
    else:
        sys.stdout.write(md)
    if a.png:
        try:
            plot(res, a.png)
        except ImportError as e:
            print(f"report: no plot ({e})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
