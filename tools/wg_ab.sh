#!/usr/bin/env bash
# tools/wg_ab.sh — A/B timing of the Hopper prefill's consumer orders on the GPU host, one process
# per (shape, cache dtype, order): `kvq bench --path fused` forced through the Hopper kernel.
# Usage (after tools/device_all.sh unpacked .devbin, or with .devbin/kvq carried):
#   tools/wg_ab.sh [orders...]      default orders: serial pingpong (KVQ_WG_MAINLOOP values)
set -u
orders=${*:-"serial pingpong"}
# batch q_len kv_len head_dim Hq Hkv
shapes=("1 8192 8192 128 32 8" "8 2048 2048 128 32 8" "4 1024 16384 128 32 8" "16 512 512 128 32 8"
        "1 8192 8192 64 32 32" "1 4096 4096 256 16 2")
# WG_SHAPES="1 8192 8192 128 32 8;8 2048 2048 128 32 8" overrides the list; KVQ_WG_DIAG passes through.
if [ -n "${WG_SHAPES:-}" ]; then IFS=';' read -r -a shapes <<< "$WG_SHAPES"; fi
for shape in "${shapes[@]}"; do
  set -- $shape
  for dt in int8 bf16; do
    for ml in $orders; do
      line=$(KVQ_PREFILL_KERNEL=wgmma KVQ_WG_MAINLOOP=$ml .devbin/kvq bench --batch $1 --q-len $2 --kv-len $3 \
        --head-dim $4 --num-qo-heads $5 --num-kv-heads $6 --path fused --kv-dtype $dt --iters 10 2>/dev/null | grep -E "^fused")
      echo "B$1 q$2 kv$3 D$4 H$5/$6 $dt $ml: $line"
    done
  done
done
