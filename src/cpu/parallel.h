// src/cpu/parallel.h — the CPU backend's one threading primitive.
//
// parallel_for(num_jobs, fn) runs fn(job_idx, worker_idx) for every job on up to
// num_threads() std::threads (hardware_concurrency, at least 1; the environment variable
// KVQ_NUM_THREADS overrides it). Jobs are handed out through an atomic counter; each job
// writes only its own outputs and computes them the same way whichever worker runs it, so
// results do not depend on the thread count. worker_idx in [0, num_workers) lets a job reuse
// per-worker scratch buffers. The first exception thrown by a job is rethrown after all
// workers joined (the remaining jobs are skipped).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace kvq::cpu {

inline int num_threads() {
  if (const char* env = std::getenv("KVQ_NUM_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

// Number of workers parallel_for will use for num_jobs jobs.
inline int num_workers_for(int64_t num_jobs) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(num_threads(), num_jobs)));
}

template <typename Fn>
void parallel_for(int64_t num_jobs, Fn&& fn) {
  if (num_jobs <= 0) return;
  const int workers = num_workers_for(num_jobs);
  if (workers == 1) {
    for (int64_t j = 0; j < num_jobs; ++j) fn(j, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto work = [&](int worker_idx) {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const int64_t j = next.fetch_add(1, std::memory_order_relaxed);
      if (j >= num_jobs) return;
      try {
        fn(j, worker_idx);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  threads.reserve(workers - 1);
  for (int w = 1; w < workers; ++w) threads.emplace_back(work, w);
  work(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace kvq::cpu
