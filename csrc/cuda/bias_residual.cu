// CUDA kernels of fastsr::bias_residual, fastsr::bias_residual_backward and
// fastsr::channel_sum (csrc/cpu/bias_residual.cpp has the formulas):
//   y = residual + scale (x + bias[c]);  dx = scale g;  dbias[c] = scale sum g
// The backward and channel_sum share one pass (WRITE_DX selects whether dx is written) that
// stores per-block partial channel sums, finished by the deterministic stage-2 kernel.
#include "cuda/params.cuh"
#include "op_checks.h"

#include <cmath>

namespace fastsr {
namespace cuda {
namespace {

constexpr const char* kFwd = "fastsr::bias_residual";
constexpr const char* kBwd = "fastsr::bias_residual_backward";
constexpr const char* kSum = "fastsr::channel_sum";

template <typename T, typename I>
__global__ void fwd_kernel(const T* __restrict__ x, ChannelParam<T> bias, const T* __restrict__ r,
                           T* __restrict__ y, typename acc<T>::type scale, I n, ChannelOf<I> channel) {
  using A = typename acc<T>::type;
  I i = static_cast<I>(blockIdx.x) * (kThreads * kUnroll) + threadIdx.x;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u, i += kThreads) {
    if (i < n) {
      y[i] = static_cast<T>(static_cast<A>(r[i]) + scale * (static_cast<A>(x[i]) + bias[channel(i)]));
    }
  }
}

template <typename T, bool WRITE_DX>
__global__ void sum_nchw_kernel(const T* __restrict__ g, T* __restrict__ dx,
                                typename acc<T>::type* __restrict__ partial, int64_t N, int64_t C,
                                int64_t HW, int64_t chunks, typename acc<T>::type scale) {
  using A = typename acc<T>::type;
  __shared__ A smem[32];
  for (int64_t plane = blockIdx.y; plane < N * C; plane += gridDim.y) {
    const int64_t n = plane / C, c = plane % C;
    const int64_t begin = static_cast<int64_t>(blockIdx.x) * kPlaneChunk;
    const int64_t end = std::min(HW, begin + kPlaneChunk);
    const int64_t base = plane * HW;
    A s = A(0);
    for (int64_t k0 = begin + threadIdx.x; k0 < end; k0 += kUnroll * kThreads) {
      A gv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {  // all loads first: kUnroll in flight per thread
        const int64_t k = k0 + u * kThreads;
        gv[u] = k < end ? static_cast<A>(g[base + k]) : A(0);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + u * kThreads;
        if (WRITE_DX && k < end) dx[base + k] = static_cast<T>(scale * gv[u]);
        s += gv[u];
      }
    }
    s = block_sum(s, smem);
    if (threadIdx.x == 0) partial[(n * chunks + blockIdx.x) * C + c] = s;
  }
}

template <typename T, bool WRITE_DX>
__global__ void sum_nhwc_kernel(const T* __restrict__ g, T* __restrict__ dx,
                                typename acc<T>::type* __restrict__ partial, int64_t P, int64_t C,
                                int64_t slots, typename acc<T>::type scale) {
  using A = typename acc<T>::type;
  __shared__ A s_s[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  for (int64_t blk = blockIdx.x; blk < slots; blk += gridDim.x) {
    const int64_t p0 = blk * kPixelsPerBlock, p1 = std::min(P, p0 + kPixelsPerBlock);
    for (int64_t c0 = 0; c0 < C; c0 += 32) {
      const int64_t c = c0 + tx;
      A s = A(0);
      if (c < C) {
        constexpr int kRows = kPixelsPerBlock / 8;
        A gv[kRows];
#pragma unroll
        for (int q = 0; q < kRows; ++q) {  // all loads first
          const int64_t p = p0 + ty + 8 * q;
          gv[q] = p < p1 ? static_cast<A>(g[p * C + c]) : A(0);
        }
#pragma unroll
        for (int q = 0; q < kRows; ++q) {
          const int64_t p = p0 + ty + 8 * q;
          if (WRITE_DX && p < p1) dx[p * C + c] = static_cast<T>(scale * gv[q]);
          s += gv[q];
        }
      }
      __syncthreads();
      s_s[ty][tx] = s;
      __syncthreads();
      if (ty == 0 && c < C) {
        A t = A(0);
#pragma unroll
        for (int r = 0; r < 8; ++r) t += s_s[r][tx];
        partial[blk * C + c] = t;
      }
    }
  }
}

at::Tensor bias_residual_cuda(const at::Tensor& x_in, const at::Tensor& bias_in,
                              const at::Tensor& residual_in, double scale) {
  check_bias_residual_args(x_in, bias_in, residual_in, scale, c10::DeviceType::CUDA, kFwd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const at::Tensor r = in_layout(residual_in, layout);
  const at::Tensor bias = bias_in.contiguous();
  at::Tensor y = at::empty_like(x, memory_format(layout));
  const int64_t n = x.numel();
  if (n == 0) return y;
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3);
  const unsigned int grid = blocks_for(n, kThreads * kUnroll);
  const bool nhwc = layout == Layout::NHWC;
  FASTSR_CUDA_DISPATCH(x.scalar_type(), kFwd, [&] {
    using A = typename acc<scalar_t>::type;
    const auto b = ChannelParam<scalar_t>::of(bias);
    with_index_type(n, [&](auto index) {
      using I = decltype(index);
      fwd_kernel<scalar_t, I><<<grid, kThreads, 0, stream()>>>(
          x.data_ptr<scalar_t>(), b, r.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), static_cast<A>(scale),
          static_cast<I>(n), ChannelOf<I>(HW, C, nhwc));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

// dx = scale * g (when write_dx) and out = scale * sum_{n,h,w} g in out's dtype.
at::Tensor scale_and_sum(const at::Tensor& g_in, double scale, bool write_dx, at::Tensor& out) {
  const c10::cuda::CUDAGuard guard(g_in.device());
  const Layout layout = layout_of(g_in);
  const at::Tensor g = in_layout(g_in, layout);
  at::Tensor dx = write_dx ? at::empty_like(g, memory_format(layout)) : at::Tensor();
  const int64_t N = g.size(0), C = g.size(1), HW = g.size(2) * g.size(3);
  if (C == 0) return dx;
  const ReduceSplit split(layout, N, C, HW);
  FASTSR_CUDA_DISPATCH(g.scalar_type(), kBwd, [&] {
    using A = typename acc<scalar_t>::type;
    const auto acc_dtype = std::is_same<A, double>::value ? at::kDouble : at::kFloat;
    const int64_t slots = g.numel() == 0 ? 1 : split.slots;
    at::Tensor partial = g.numel() == 0 ? at::zeros({slots, C}, g.options().dtype(acc_dtype))
                                        : at::empty({slots, C}, g.options().dtype(acc_dtype));
    A* pp = partial.data_ptr<A>();
    scalar_t* dxp = write_dx ? dx.data_ptr<scalar_t>() : nullptr;
    const A s = static_cast<A>(scale);
    if (g.numel() > 0) {
      if (split.nhwc) {
        if (write_dx)
          sum_nhwc_kernel<scalar_t, true><<<split.grid, kThreads, 0, stream()>>>(
              g.data_ptr<scalar_t>(), dxp, pp, N * HW, C, slots, s);
        else
          sum_nhwc_kernel<scalar_t, false><<<split.grid, kThreads, 0, stream()>>>(
              g.data_ptr<scalar_t>(), dxp, pp, N * HW, C, slots, s);
      } else {
        if (write_dx)
          sum_nchw_kernel<scalar_t, true><<<split.grid, kThreads, 0, stream()>>>(
              g.data_ptr<scalar_t>(), dxp, pp, N, C, HW, split.chunks, s);
        else
          sum_nchw_kernel<scalar_t, false><<<split.grid, kThreads, 0, stream()>>>(
              g.data_ptr<scalar_t>(), dxp, pp, N, C, HW, split.chunks, s);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    finalize<A>(pp, slots, C, SumOut::of(out, 1, false, scale));
  });
  return dx;
}

std::tuple<at::Tensor, at::Tensor> bias_residual_backward_cuda(const at::Tensor& grad,
                                                               const at::Tensor& bias,
                                                               double scale) {
  check_channel_sum_args(grad, "grad", scale, c10::DeviceType::CUDA, kBwd);
  check_channel_param(bias, grad, /*allow_shared=*/false, kBwd, "bias");
  at::Tensor dbias = at::empty({grad.size(1)}, bias.options());
  at::Tensor dx = scale_and_sum(grad, scale, /*write_dx=*/true, dbias);
  return {dx, dbias};
}

at::Tensor channel_sum_cuda(const at::Tensor& x, double scale, at::ScalarType dtype) {
  check_channel_sum_args(x, "x", scale, c10::DeviceType::CUDA, kSum);
  TORCH_CHECK_TYPE(at::isFloatingType(dtype), kSum, ": dtype must be a floating dtype, got ", dtype);
  at::Tensor out = at::empty({x.size(1)}, x.options().dtype(dtype));
  scale_and_sum(x, scale, /*write_dx=*/false, out);
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CUDA, m) {
  m.impl("bias_residual", &fastsr::cuda::bias_residual_cuda);
  m.impl("bias_residual_backward", &fastsr::cuda::bias_residual_backward_cuda);
  m.impl("channel_sum", &fastsr::cuda::channel_sum_cuda);
}
