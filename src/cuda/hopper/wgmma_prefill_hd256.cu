// src/cuda/hopper/wgmma_prefill_hd256.cu — the Hopper prefill's head dim 256 instantiations.
#include "src/cuda/hopper/wgmma_prefill_launch.cuh"

namespace kvq::cuda::hopper {
void launch_wg_hd256(const TcPrefillParams& params, int batch_size, bool q_fp16, bool kv_int8, cudaStream_t stream) {
  launch_wg_hd<256>(params, batch_size, q_fp16, kv_int8, stream);
}
}  // namespace kvq::cuda::hopper
