#!/usr/bin/env python3
"""bench/report.py — turns one bench/peers.py results file into the tables of docs/performance.md
and (where matplotlib is installed) the plot docs/peers.png.

usage: python3 bench/report.py RESULTS.json [--md OUT.md] [--png OUT.png]

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
    kvq_cols = ["kvq_decode", "kvq_decode_split", "kvq_decode_bf16cache"]
    lines = ["| shape | kvq_decode ms (GB/s) | kvq_decode_split ms | kvq_decode_bf16cache ms | best peer | best peer ms (GB/s) | kvq_decode / best (time) | kvq_decode_bf16cache / best |",
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
        lines.append(f"| {name} | {cell(k, True)} | {cell('kvq_decode_split')} | {cell(k + '_bf16cache')} | "
                     f"{bname or ''} | {cell(bname, True) if bname else ''} | {ratio(k)} | {ratio(k + '_bf16cache')} |")
    return "\n".join(lines)


def markdown(res):
    c = res.get("ceilings", {})
    head = (f"GPU: **{res['gpu']}**, torch {res.get('torch', '?')}, {res['date']}. Ceilings measured in the same run: "
            f"device copy {fmt(c.get('copy_tbps'), 2)} TB/s (read + write), read {fmt(c.get('read_tbps'), 2)} TB/s, "
            f"bf16 GEMM {fmt(c.get('bf16_gemm_tflops'), 0)} TFLOP/s.")
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
            ax.bar([x + (j - (len(series) - 1) / 2) * w for x in xs], vals, w, label=s)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("fraction " + unit)
        ax.legend(fontsize=8)
    axes[0].set_title("prefill")
    axes[1].set_title("decode")
    fig.suptitle(f"kvq vs the best peer per shape, {res['gpu']}, {res['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--md", default="")
    ap.add_argument("--png", default="")
    a = ap.parse_args()
    res = load(a.results)
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
