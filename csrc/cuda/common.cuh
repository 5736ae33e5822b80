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
// Stage 1 (in each op's kernel) writes NACC partial sums per (slot, channel) into
// partial[a][slot][c], a = 0..NACC-1, for `slots` slots. Stage 2 (this kernel) sums them per
// channel in a fixed order and writes `out_a[c / group] = scale_a * sum` in the output's
// dtype; `group` > 1 sums `group` consecutive input channels into one output (the r*r
// channels that PixelShuffle maps to one output channel), `shared_a` sums all channels into
// element 0 (a PReLU weight shared by every channel). The result is deterministic: it does
// not depend on the scheduling of either stage.
template <typename A, typename O>
__global__ void finalize_channel_sums(const A* __restrict__ partial, O* __restrict__ out,
                                      int64_t slots, int64_t C, int64_t group, bool shared,
                                      A scale) {
  __shared__ A smem[32];
  const int64_t Cout = shared ? 1 : C / group;
  for (int64_t co = blockIdx.x; co < Cout; co += gridDim.x) {
    const int64_t c0 = shared ? 0 : co * group;
    const int64_t cn = shared ? C : group;
    const int64_t n = slots * cn;
    A v = A(0);
    for (int64_t k = threadIdx.x; k < n; k += blockDim.x) {
      const int64_t s = k / cn, c = c0 + k % cn;
      v += partial[s * C + c];
    }
    v = block_sum(v, smem);
    if (threadIdx.x == 0) out[co] = static_cast<O>(scale * v);
  }
}

// Launches stage 2 for one accumulator: `partial` (slots, C) of acc type A into `out`
// (C / group elements, or 1 when shared) of out's dtype, which is A's or the activation's.
template <typename A>
inline void finalize_into(const A* partial, at::Tensor& out, int64_t slots, int64_t C,
                          int64_t group, bool shared, double scale) {
  const int64_t Cout = shared ? 1 : C / group;
  if (Cout == 0) return;
  const unsigned int grid = blocks_for(Cout, 1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, out.scalar_type(), "fastsr::finalize", [&] {
    finalize_channel_sums<A, scalar_t><<<grid, kThreads, 0, stream()>>>(
        partial, out.data_ptr<scalar_t>(), slots, C, group, shared, static_cast<A>(scale));
  });
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
