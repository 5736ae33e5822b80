// Shared pieces of the CPU kernels: input checks, element load/store with fp32
// accumulation for bf16, run-time ISA dispatch and the NCHW / channels_last layout switch.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include "checks.h"

#include <cmath>
#include <cstdint>
#include <cstring>

// Run-time ISA dispatch. Each hot loop is compiled three times (AVX-512, AVX2+FMA, and the
// portable x86-64 baseline) and the dynamic loader picks the best for this CPU through an
// ifunc resolver, so the extension runs on any x86-64 while using AVX-512 where present.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FASTSR_MULTIVERSION \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTSR_MULTIVERSION
#endif
#define FASTSR_INLINE inline __attribute__((always_inline))

namespace fastsr {

// bf16 is handled as its raw 16 bits so that the loops auto-vectorise: widen by a shift,
// narrow with round-to-nearest-even (NaN stays NaN), exactly as c10::BFloat16 does.
using bf16_t = uint16_t;

FASTSR_INLINE float load(const float* p, int64_t i) { return p[i]; }
FASTSR_INLINE double load(const double* p, int64_t i) { return p[i]; }
FASTSR_INLINE float load(const bf16_t* p, int64_t i) {
  uint32_t u = static_cast<uint32_t>(p[i]) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}
FASTSR_INLINE void store(float* p, int64_t i, float v) { p[i] = v; }
FASTSR_INLINE void store(double* p, int64_t i, double v) { p[i] = v; }
FASTSR_INLINE void store(bf16_t* p, int64_t i, float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof(u));
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  // NaN test on the bits (not std::isnan) so that the select stays branch-free and the
  // loops around it vectorise.
  const bool is_nan = (u & 0x7fffffffu) > 0x7f800000u;
  p[i] = static_cast<bf16_t>(is_nan ? 0x7fc0u : rounded);
}

// The storage type of a tensor's elements as seen by the kernels.
template <typename scalar_t> struct storage { using type = scalar_t; };
template <> struct storage<at::BFloat16> { using type = bf16_t; };
// Accumulation type: fp32 for fp32/bf16, fp64 for fp64 (gradcheck).
template <typename scalar_t> struct acc { using type = float; };
template <> struct acc<double> { using type = double; };

template <typename scalar_t>
inline typename storage<scalar_t>::type* ptr(const at::Tensor& t) {
  return reinterpret_cast<typename storage<scalar_t>::type*>(t.data_ptr<scalar_t>());
}

// Dispatch over the dtypes the CPU kernels support: fp32, bf16 (fp32 accumulation) and
// fp64 (for gradcheck).
#define FASTSR_DISPATCH_FLOATING(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// The CPU kernels' checks: the shared ones of checks.h with the device fixed to CPU.
inline void check_float_dtype(const at::Tensor& t, const char* op, const char* arg) {
  check_float_dtype(t, c10::DeviceType::CPU, op, arg);
}

inline void check_cpu(const at::Tensor& t, const char* op, const char* arg) {
  check_device(t, c10::DeviceType::CPU, op, arg);
}

// Per-channel parameter (bias or PReLU weight) as a contiguous acc_t vector of length C,
// expanding a single shared PReLU weight.
template <typename acc_t>
inline at::Tensor channel_param(const at::Tensor& p, int64_t C) {
  auto dtype = std::is_same<acc_t, double>::value ? at::kDouble : at::kFloat;
  return p.to(dtype).reshape({-1}).expand({C}).contiguous();
}

// Fixed-size chunks for reductions over pixels, so that the summation order -- and the
// result -- does not depend on the number of threads.
constexpr int64_t kPixelChunk = 256;

}  // namespace fastsr

namespace fastsr {

// Work split for the NCHW layout: every (n, c) plane of HW elements is cut into fixed
// chunks of kPlaneChunk elements; f(task, c, offset, len) handles elements
// [offset, offset + len) of the flat tensor, all of channel c. `task` indexes a
// per-task partial-sum slot (see reduce_partials).
constexpr int64_t kPlaneChunk = 16384;

inline int64_t plane_chunks(int64_t HW) { return (HW + kPlaneChunk - 1) / kPlaneChunk; }

template <typename F>
inline void for_each_plane_chunk(int64_t N, int64_t C, int64_t HW, const F& f) {
  const int64_t chunks = plane_chunks(HW);
  const int64_t tasks = N * C * chunks;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::min(HW, kPlaneChunk));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t plane = t / chunks;
      const int64_t start = (t % chunks) * kPlaneChunk;
      f(t, plane % C, plane * HW + start, std::min(kPlaneChunk, HW - start));
    }
  });
}

// Work split for channels_last: pixels (rows of C contiguous elements) in fixed chunks of
// kPixelChunk; f(task, first_pixel, num_pixels).
inline int64_t pixel_chunks(int64_t P) { return (P + kPixelChunk - 1) / kPixelChunk; }

template <typename F>
inline void for_each_pixel_chunk(int64_t P, int64_t C, const F& f) {
  const int64_t tasks = pixel_chunks(P);
  const int64_t grain = std::max<int64_t>(1, 32768 / (kPixelChunk * C));
  at::parallel_for(0, tasks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t p0 = t * kPixelChunk;
      f(t, p0, std::min(kPixelChunk, P - p0));
    }
  });
}

// Sums per-task partials into one value per channel, in a fixed order (deterministic for
// any thread count), in double. NCHW partials are indexed [n][c][chunk] (one value per
// task); NHWC partials are [task][c].
template <typename acc_t>
inline at::Tensor reduce_partials(const std::vector<acc_t>& partial, Layout layout, int64_t N,
                                  int64_t C, int64_t HW, double scale, at::ScalarType out_dtype) {
  std::vector<double> sum(C, 0.0);
  if (layout == Layout::NCHW) {
    const int64_t chunks = plane_chunks(HW);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t k = 0; k < chunks; ++k) sum[c] += partial[(n * C + c) * chunks + k];
  } else {
    const int64_t tasks = static_cast<int64_t>(partial.size()) / C;
    for (int64_t t = 0; t < tasks; ++t)
      for (int64_t c = 0; c < C; ++c) sum[c] += partial[t * C + c];
  }
  auto out = at::empty({C}, at::TensorOptions().dtype(at::kDouble));
  auto* o = out.data_ptr<double>();
  for (int64_t c = 0; c < C; ++c) o[c] = sum[c] * scale;
  return out.to(out_dtype);
}

// Number of partial-sum slots for a reduction over a tensor of shape (N, C, HW).
inline int64_t partial_slots(Layout layout, int64_t N, int64_t C, int64_t HW) {
  return layout == Layout::NCHW ? N * C * plane_chunks(HW) : pixel_chunks(N * HW) * C;
}

inline void check_activation(const at::Tensor& x, const char* op, const char* arg) {
  check_activation(x, c10::DeviceType::CPU, op, arg);
}

}  // namespace fastsr
