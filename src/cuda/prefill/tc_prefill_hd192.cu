// src/cuda/prefill/tc_prefill_hd192.cu — tensor-core prefill instantiations for head dim 192:
// {bf16, fp16} q x {same-dtype cache, int8 cache} (see tc_prefill_launch.cuh).
#include "src/cuda/prefill/tc_prefill_launch.cuh"

KVQ_TC_PREFILL_INSTANTIATE(192)
