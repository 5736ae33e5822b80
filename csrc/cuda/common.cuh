// Shared pieces of the CUDA kernels: dtype dispatch with fp32 accumulation for the 16-bit
// types, launch helpers, channel index arithmetic without 64-bit division, and the
// deterministic two-stage per-channel reduction used by every backward.
//
// Why C++ and not only Triton: at the papers' shapes (16x64x24x24 activations, a few MB)
// every kernel runs in about a microsecond, so an op's cost is its launch path. A kernel
// registered from Python and launched through Triton's Python launcher costs ~50 us per
// call; launched from here it costs what an ATen elementwise op costs.
#pragma once

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/cuda/detail/IntegerDivider.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include <cstdint>

#include "checks.h"

namespace fastsr {
namespace cuda {

// Accumulation type: fp32 for fp32/bf16/fp16, fp64 for fp64.
template <typename T> struct acc { using type = float; };
template <> struct acc<double> { using type = double; };

#define FASTSR_CUDA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, TYPE, NAME, __VA_ARGS__)

inline void check_cuda_activation(const at::Tensor& x, const char* op, const char* arg) {
  check_activation(x, c10::DeviceType::CUDA, op, arg);
}

constexpr int kThreads = 256;
// Elements each thread handles in the elementwise kernels (independent loads in flight).
constexpr int kUnroll = 4;
// Grid dimension y is limited to 65535; larger plane counts loop.
constexpr int64_t kMaxGridY = 65535;

inline unsigned int blocks_for(int64_t n, int64_t per_block) {
  const int64_t b = (n + per_block - 1) / per_block;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>(b, 1 << 30)));
}

inline cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream(); }

// Whether every flat element index of a tensor (and a few blocks beyond) fits in 32 bits:
// then the kernels index with uint32 and divide with precomputed multipliers.
inline bool fits_32bit(int64_t numel) { return numel < (int64_t{1} << 31) - (int64_t{1} << 20); }

// Calls f(I{}) with the index type for `numel` elements: uint32_t when it fits, else uint64_t.
template <typename F>
inline void with_index_type(int64_t numel, const F& f) {
  if (fits_32bit(numel)) f(uint32_t{});
  else f(uint64_t{});
}

// Channel of flat element `i`: NCHW c = (i / HW) % C, NHWC c = i % C.
template <typename I>
struct ChannelOf {
  at::cuda::detail::IntDivider<I> hw, c;
  bool nhwc;
  ChannelOf(int64_t HW, int64_t C, bool nhwc_)
      : hw(static_cast<I>(std::max<int64_t>(HW, 1))), c(static_cast<I>(std::max<int64_t>(C, 1))),
        nhwc(nhwc_) {}
  __device__ __forceinline__ I operator()(I i) const {
    return nhwc ? c.divmod(i).mod : c.divmod(hw.div(i)).mod;
  }
};

// ---- block reductions --------------------------------------------------------------------
template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

// Sum of `v` over the block (blockDim.x a multiple of 32, <= 1024); the result is valid in
// thread 0. `smem` holds 32 values. The order of additions depends only on blockDim.
template <typename A>
__device__ __forceinline__ A block_sum(A v, A* smem) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // smem may still be read by a previous call
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  const int nwarps = blockDim.x >> 5;
  v = threadIdx.x < nwarps ? smem[threadIdx.x] : A(0);
  if (warp == 0) v = warp_sum(v);
  return v;
}

// ---- per-channel reductions ------------------------------------------------------------
// Stage 1 (in each op's kernel) writes partial sums per (slot, channel) into partial[slot][c]
// for `slots` slots, one such array per accumulator. Stage 2 (finalize_sums, one launch for
// up to two accumulators) sums them per channel in a fixed order and writes
// `scale * sum` into the output in its dtype: `group` > 1 sums `group` consecutive input
// channels into one output (the r*r channels that PixelShuffle maps to one output channel),
// `shared` sums all channels into element 0 (a PReLU weight shared by every channel). The
// result is deterministic: it does not depend on the scheduling of either stage.
struct SumOut {
  void* ptr = nullptr;
  at::ScalarType dtype = at::kFloat;
  int64_t group = 1;
  bool shared = false;
  double scale = 1.0;

  static SumOut of(at::Tensor& out, int64_t group = 1, bool shared = false, double scale = 1.0) {
    return {out.data_ptr(), out.scalar_type(), group, shared, scale};
  }
  C10_HOST_DEVICE int64_t count(int64_t C) const { return shared ? 1 : C / group; }
};

template <typename A>
__device__ __forceinline__ void store_as(const SumOut& o, int64_t i, A v) {
  switch (o.dtype) {
    case at::kDouble: static_cast<double*>(o.ptr)[i] = static_cast<double>(v); break;
    case at::kHalf: static_cast<at::Half*>(o.ptr)[i] = static_cast<at::Half>(static_cast<float>(v)); break;
    case at::kBFloat16: static_cast<at::BFloat16*>(o.ptr)[i] = static_cast<at::BFloat16>(static_cast<float>(v)); break;
    default: static_cast<float*>(o.ptr)[i] = static_cast<float>(v); break;
  }
}

template <typename A>
__global__ void finalize_sums(const A* __restrict__ partial, int64_t slots, int64_t C, SumOut o0,
                              SumOut o1, int nout) {
  __shared__ A smem[32];
  for (int k = 0; k < nout; ++k) {
    const SumOut& o = k == 0 ? o0 : o1;
    const A* part = partial + k * slots * C;
    for (int64_t co = blockIdx.x; co < o.count(C); co += gridDim.x) {
      const int64_t c0 = o.shared ? 0 : co * o.group;
      const int64_t cn = o.shared ? C : o.group;
      const int64_t n = slots * cn;
      A v = A(0);
      for (int64_t j = threadIdx.x; j < n; j += blockDim.x) v += part[(j / cn) * C + c0 + j % cn];
      v = block_sum(v, smem);
      if (threadIdx.x == 0) store_as(o, co, static_cast<A>(o.scale) * v);
    }
  }
}

// Launches stage 2 for one or two accumulators (`partial` holds their (slots, C) arrays back
// to back).
template <typename A>
inline void finalize(const A* partial, int64_t slots, int64_t C, SumOut o0, SumOut o1 = SumOut(),
                     int nout = 1) {
  const int64_t blocks = std::max(o0.count(C), nout > 1 ? o1.count(C) : 0);
  if (blocks == 0) return;
  finalize_sums<A><<<blocks_for(blocks, 1), kThreads, 0, stream()>>>(partial, slots, C, o0, o1, nout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Work split of a stage-1 reduction over an activation of shape (N, C, HW).
//   NCHW: grid (chunks of a plane, planes): a block reduces kPlaneChunk elements of one
//         (n, c) plane to one value; slot = n * chunks + chunk.
//   NHWC: a block reduces kPixelsPerBlock pixels for every channel; slot = block.
constexpr int64_t kPlaneChunk = kThreads * kUnroll * 4;
constexpr int64_t kPixelsPerBlock = 64;

struct ReduceSplit {
  bool nhwc;
  int64_t N, C, HW, chunks, slots;
  dim3 grid;
  ReduceSplit(Layout layout, int64_t N_, int64_t C_, int64_t HW_) : nhwc(layout == Layout::NHWC), N(N_), C(C_), HW(HW_) {
    if (nhwc) {
      chunks = (N * HW + kPixelsPerBlock - 1) / kPixelsPerBlock;
      slots = chunks;
      grid = dim3(blocks_for(chunks, 1));
    } else {
      chunks = (HW + kPlaneChunk - 1) / kPlaneChunk;
      slots = N * chunks;
      grid = dim3(static_cast<unsigned int>(chunks),
                  static_cast<unsigned int>(std::min<int64_t>(N * C, kMaxGridY)));
    }
  }
};

}  // namespace cuda
}  // namespace fastsr
