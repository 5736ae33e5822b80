// CUDA kernels of fastsr::bias_prelu (csrc/cpu/bias_prelu.cpp has the formulas):
//   y = PReLU(x + bias[c]);  dz = g if z > 0 else a[c] g;  dx = dz;
//   dbias[c] = sum dz;  dweight[c] = sum_{z <= 0} g z
// Forward: one elementwise pass. Backward: one pass writing dx and per-block partial sums of
// dbias and dweight, then one small kernel that adds the partials per channel in a fixed
// order (deterministic) and writes both gradients in their parameters' dtypes.
#include "cuda/params.cuh"
#include "op_checks.h"

namespace fastsr {
namespace cuda {
namespace {

constexpr const char* kFwd = "fastsr::bias_prelu";
constexpr const char* kBwd = "fastsr::bias_prelu_backward";

template <typename T, typename I>
__global__ void fwd_kernel(const T* __restrict__ x, ChannelParam<T> bias, ChannelParam<T> weight,
                           T* __restrict__ y, I n, ChannelOf<I> channel) {
  using A = typename acc<T>::type;
  I i = static_cast<I>(blockIdx.x) * (kThreads * kUnroll) + threadIdx.x;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u, i += kThreads) {
    if (i < n) {
      const I c = channel(i);
      const A z = static_cast<A>(x[i]) + bias[c];
      y[i] = static_cast<T>(z > A(0) ? z : weight[c] * z);
    }
  }
}

// NCHW backward: block (chunk, plane) handles kPlaneChunk elements of one (n, c) plane.
template <typename T>
__global__ void bwd_nchw_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                ChannelParam<T> bias, ChannelParam<T> weight, T* __restrict__ dx,
                                typename acc<T>::type* __restrict__ partial, int64_t N, int64_t C,
                                int64_t HW, int64_t chunks) {
  using A = typename acc<T>::type;
  __shared__ A smem[32];
  const int64_t slots = N * chunks;
  for (int64_t plane = blockIdx.y; plane < N * C; plane += gridDim.y) {
    const int64_t n = plane / C, c = plane % C;
    const A b = bias[c], a = weight[c];
    const int64_t begin = static_cast<int64_t>(blockIdx.x) * kPlaneChunk;
    const int64_t end = std::min(HW, begin + kPlaneChunk);
    const int64_t base = plane * HW;
    A sd = A(0), sw = A(0);
    for (int64_t k0 = begin + threadIdx.x; k0 < end; k0 += kUnroll * kThreads) {
      A xv[kUnroll], gv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {  // all loads first: kUnroll in flight per thread
        const int64_t k = k0 + u * kThreads;
        xv[u] = k < end ? static_cast<A>(x[base + k]) : A(0);
        gv[u] = k < end ? static_cast<A>(g[base + k]) : A(0);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t k = k0 + u * kThreads;
        const A z = xv[u] + b;
        const bool pos = z > A(0);
        const A d = pos ? gv[u] : a * gv[u];
        if (k < end) dx[base + k] = static_cast<T>(d);
        sd += d;
        sw += pos ? A(0) : gv[u] * z;
      }
    }
    sd = block_sum(sd, smem);
    sw = block_sum(sw, smem);
    if (threadIdx.x == 0) {
      const int64_t slot = n * chunks + blockIdx.x;
      partial[slot * C + c] = sd;
      partial[(slots + slot) * C + c] = sw;
    }
  }
}

// channels_last backward: block b handles kPixelsPerBlock pixels for every channel; thread
// (tx, ty) of a (32, 8) block sums channel c0 + tx over pixels ty, ty + 8, ...
template <typename T>
__global__ void bwd_nhwc_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                ChannelParam<T> bias, ChannelParam<T> weight, T* __restrict__ dx,
                                typename acc<T>::type* __restrict__ partial, int64_t P, int64_t C,
                                int64_t slots) {
  using A = typename acc<T>::type;
  __shared__ A sd_s[8][33], sw_s[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  for (int64_t blk = blockIdx.x; blk < slots; blk += gridDim.x) {
    const int64_t p0 = blk * kPixelsPerBlock, p1 = std::min(P, p0 + kPixelsPerBlock);
    for (int64_t c0 = 0; c0 < C; c0 += 32) {
      const int64_t c = c0 + tx;
      A sd = A(0), sw = A(0);
      if (c < C) {
        const A b = bias[c], a = weight[c];
        constexpr int kRows = kPixelsPerBlock / 8;
        A xv[kRows], gv[kRows];
#pragma unroll
        for (int q = 0; q < kRows; ++q) {  // all loads first
          const int64_t p = p0 + ty + 8 * q;
          xv[q] = p < p1 ? static_cast<A>(x[p * C + c]) : A(0);
          gv[q] = p < p1 ? static_cast<A>(g[p * C + c]) : A(0);
        }
#pragma unroll
        for (int q = 0; q < kRows; ++q) {
          const int64_t p = p0 + ty + 8 * q;
          const A z = xv[q] + b;
          const bool pos = z > A(0);
          const A d = pos ? gv[q] : a * gv[q];
          if (p < p1) dx[p * C + c] = static_cast<T>(d);
          sd += d;
          sw += pos ? A(0) : gv[q] * z;
        }
      }
      __syncthreads();
      sd_s[ty][tx] = sd;
      sw_s[ty][tx] = sw;
      __syncthreads();
      if (ty == 0 && c < C) {
        A td = A(0), tw = A(0);
#pragma unroll
        for (int r = 0; r < 8; ++r) {
          td += sd_s[r][tx];
          tw += sw_s[r][tx];
        }
        partial[blk * C + c] = td;
        partial[(slots + blk) * C + c] = tw;
      }
    }
  }
}

void check_args(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& weight, const char* op) {
  check_bias_prelu_args(x, bias, weight, c10::DeviceType::CUDA, op);
}

at::Tensor bias_prelu_cuda(const at::Tensor& x_in, const at::Tensor& bias_in, const at::Tensor& weight_in) {
  check_args(x_in, bias_in, weight_in, kFwd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const at::Tensor bias = bias_in.contiguous(), weight = weight_in.contiguous();
  at::Tensor y = at::empty_like(x, memory_format(layout));
  const int64_t n = x.numel();
  if (n == 0) return y;
  const int64_t C = x.size(1), HW = x.size(2) * x.size(3);
  const unsigned int grid = blocks_for(n, kThreads * kUnroll);
  const bool nhwc = layout == Layout::NHWC;
  FASTSR_CUDA_DISPATCH(x.scalar_type(), kFwd, [&] {
    const auto b = ChannelParam<scalar_t>::of(bias), a = ChannelParam<scalar_t>::of(weight);
    with_index_type(n, [&](auto index) {
      using I = decltype(index);
      fwd_kernel<scalar_t, I><<<grid, kThreads, 0, stream()>>>(
          x.data_ptr<scalar_t>(), b, a, y.data_ptr<scalar_t>(), static_cast<I>(n), ChannelOf<I>(HW, C, nhwc));
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> bias_prelu_backward_cuda(
    const at::Tensor& grad_in, const at::Tensor& x_in, const at::Tensor& bias_in,
    const at::Tensor& weight_in) {
  check_args(x_in, bias_in, weight_in, kBwd);
  check_same_as(grad_in, x_in, kBwd, "grad", "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const at::Tensor grad = in_layout(grad_in, layout);
  const at::Tensor bias = bias_in.contiguous(), weight = weight_in.contiguous();
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  at::Tensor dx = at::empty_like(x, memory_format(layout));
  at::Tensor dbias = at::empty_like(bias);
  at::Tensor dweight = at::empty_like(weight);
  if (C == 0) return {dx, dbias, dweight};
  const ReduceSplit split(layout, N, C, HW);
  const bool shared = weight.numel() == 1;
  FASTSR_CUDA_DISPATCH(x.scalar_type(), kBwd, [&] {
    using A = typename acc<scalar_t>::type;
    const auto acc_dtype = std::is_same<A, double>::value ? at::kDouble : at::kFloat;
    // Two accumulators (dz, g z) per (slot, channel). With no elements, one zero slot.
    const int64_t slots = x.numel() == 0 ? 1 : split.slots;
    at::Tensor partial = x.numel() == 0 ? at::zeros({2, slots, C}, x.options().dtype(acc_dtype))
                                        : at::empty({2, slots, C}, x.options().dtype(acc_dtype));
    A* pp = partial.data_ptr<A>();
    const auto b = ChannelParam<scalar_t>::of(bias), a = ChannelParam<scalar_t>::of(weight);
    if (x.numel() > 0) {
      if (split.nhwc) {
        bwd_nhwc_kernel<scalar_t><<<split.grid, kThreads, 0, stream()>>>(
            grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b, a, dx.data_ptr<scalar_t>(), pp,
            N * HW, C, slots);
      } else {
        bwd_nchw_kernel<scalar_t><<<split.grid, kThreads, 0, stream()>>>(
            grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b, a, dx.data_ptr<scalar_t>(), pp,
            N, C, HW, split.chunks);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    finalize<A>(pp, slots, C, SumOut::of(dbias), SumOut::of(dweight, 1, shared), 2);
  });
  return {dx, dbias, dweight};
}

}  // namespace
}  // namespace cuda
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CUDA, m) {
  m.impl("bias_prelu", &fastsr::cuda::bias_prelu_cuda);
  m.impl("bias_prelu_backward", &fastsr::cuda::bias_prelu_backward_cuda);
}
