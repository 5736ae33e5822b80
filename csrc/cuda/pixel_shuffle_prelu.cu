// CUDA kernels of fastsr::pixel_shuffle_prelu (csrc/cpu/pixel_shuffle_prelu.cpp has the
// formulas):
//   y[n, c, h*r + i, w*r + j] = PReLU(x[n, c*r*r + i*r + j, h, w]; weight[c])
//   dx = g * (v > 0 ? 1 : weight[c]);  dweight[c] = sum_{v <= 0} g * v
// The output takes x's memory format (NCHW or channels_last; other strides are copied to
// NCHW first). Forward: one thread per output element, gathering its input. Backward: one
// pass over x writing dx and per-block partial sums of g v per input channel; the stage-2
// kernel adds the r*r input channels of each output channel in a fixed order.
#include "cuda/params.cuh"
#include "op_checks.h"

namespace fastsr {
namespace cuda {
namespace {

constexpr const char* kFwd = "fastsr::pixel_shuffle_prelu";
constexpr const char* kBwd = "fastsr::pixel_shuffle_prelu_backward";

template <typename I>
struct Geometry {
  at::cuda::detail::IntDivider<I> r, W, Wr, Hr, Co;
  I H, Cin, rr;
  Geometry(int64_t r_, int64_t H_, int64_t W_, int64_t Co_)
      : r(static_cast<I>(r_)), W(static_cast<I>(std::max<int64_t>(W_, 1))),
        Wr(static_cast<I>(std::max<int64_t>(W_ * r_, 1))),
        Hr(static_cast<I>(std::max<int64_t>(H_ * r_, 1))),
        Co(static_cast<I>(std::max<int64_t>(Co_, 1))), H(static_cast<I>(H_)),
        Cin(static_cast<I>(Co_ * r_ * r_)), rr(static_cast<I>(r_ * r_)) {}
};

// Input offset and output channel of output element i.
template <typename I, bool NHWC>
__device__ __forceinline__ I source_of(I i, const Geometry<I>& g, I& c) {
  if (NHWC) {
    auto t = g.Co.divmod(i);  // (n, oh, ow), c
    c = t.mod;
    auto u = g.Wr.divmod(t.div);  // (n, oh), ow
    auto v = g.Hr.divmod(u.div);  // n, oh
    auto hw_i = g.r.divmod(v.mod);  // h, i
    auto w_j = g.r.divmod(u.mod);   // w, j
    const I cin = c * g.rr + hw_i.mod * g.r.divisor + w_j.mod;
    return ((v.div * g.H + hw_i.div) * g.W.divisor + w_j.div) * g.Cin + cin;
  } else {
    auto u = g.Wr.divmod(i);  // (n, c, oh), ow
    auto v = g.Hr.divmod(u.div);  // (n, c), oh
    c = g.Co.mod(v.div);
    auto hw_i = g.r.divmod(v.mod);
    auto w_j = g.r.divmod(u.mod);
    // (n * Cin + c * r * r) = (n * Co + c) * r * r
    const I plane = v.div * g.rr + hw_i.mod * g.r.divisor + w_j.mod;
    return (plane * g.H + hw_i.div) * g.W.divisor + w_j.div;
  }
}

template <typename T, typename I, bool NHWC>
__global__ void fwd_kernel(const T* __restrict__ x, ChannelParam<T> weight, T* __restrict__ y, I n,
                           Geometry<I> geo) {
  using A = typename acc<T>::type;
  I i = static_cast<I>(blockIdx.x) * (kThreads * kUnroll) + threadIdx.x;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u, i += kThreads) {
    if (i < n) {
      I c;
      const A v = static_cast<A>(x[source_of<I, NHWC>(i, geo, c)]);
      y[i] = static_cast<T>(v > A(0) ? v : weight[c] * v);
    }
  }
}

// NCHW backward: block (chunk, plane) handles kPlaneChunk elements of input plane (n, cin).
template <typename T>
__global__ void bwd_nchw_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                ChannelParam<T> weight, T* __restrict__ dx,
                                typename acc<T>::type* __restrict__ partial, int64_t N, int64_t Cin,
                                int64_t H, int64_t W, int64_t r, int64_t chunks) {
  using A = typename acc<T>::type;
  __shared__ A smem[32];
  const int64_t HW = H * W, rr = r * r, Co = Cin / rr, Wr = W * r, Hr = H * r;
  for (int64_t plane = blockIdx.y; plane < N * Cin; plane += gridDim.y) {
    const int64_t n = plane / Cin, cin = plane % Cin;
    const int64_t c = cin / rr, i = (cin % rr) / r, j = cin % r;
    const A a = weight[c];
    const int64_t gplane = (n * Co + c) * Hr * Wr;
    const int64_t begin = static_cast<int64_t>(blockIdx.x) * kPlaneChunk;
    const int64_t end = std::min(HW, begin + kPlaneChunk);
    A sw = A(0);
    for (int64_t k = begin + threadIdx.x; k < end; k += blockDim.x) {
      const int64_t h = k / W, w = k - h * W;
      const A v = static_cast<A>(x[plane * HW + k]);
      const A gi = static_cast<A>(g[gplane + (h * r + i) * Wr + w * r + j]);
      const bool pos = v > A(0);
      dx[plane * HW + k] = static_cast<T>(pos ? gi : a * gi);
      sw += pos ? A(0) : gi * v;
    }
    sw = block_sum(sw, smem);
    if (threadIdx.x == 0) partial[(n * chunks + blockIdx.x) * Cin + cin] = sw;
  }
}

// channels_last backward: block b handles kPixelsPerBlock input pixels for every input
// channel; thread (tx, ty) of a (32, 8) block sums channel c0 + tx over pixels ty, ty + 8, ...
template <typename T>
__global__ void bwd_nhwc_kernel(const T* __restrict__ g, const T* __restrict__ x,
                                ChannelParam<T> weight, T* __restrict__ dx,
                                typename acc<T>::type* __restrict__ partial, int64_t P, int64_t Cin,
                                int64_t H, int64_t W, int64_t r, int64_t slots) {
  using A = typename acc<T>::type;
  __shared__ A s_s[8][33];
  const int tx = threadIdx.x & 31, ty = threadIdx.x >> 5;
  const int64_t HW = H * W, rr = r * r, Co = Cin / rr, Wr = W * r, Hr = H * r;
  for (int64_t blk = blockIdx.x; blk < slots; blk += gridDim.x) {
    const int64_t p0 = blk * kPixelsPerBlock, p1 = std::min(P, p0 + kPixelsPerBlock);
    for (int64_t c0 = 0; c0 < Cin; c0 += 32) {
      const int64_t cin = c0 + tx;
      A sw = A(0);
      if (cin < Cin) {
        const int64_t c = cin / rr, i = (cin % rr) / r, j = cin % r;
        const A a = weight[c];
        for (int64_t p = p0 + ty; p < p1; p += 8) {
          const int64_t n = p / HW, hw = p - n * HW, h = hw / W, w = hw - h * W;
          const A v = static_cast<A>(x[p * Cin + cin]);
          const A gi = static_cast<A>(g[((n * Hr + h * r + i) * Wr + w * r + j) * Co + c]);
          const bool pos = v > A(0);
          dx[p * Cin + cin] = static_cast<T>(pos ? gi : a * gi);
          sw += pos ? A(0) : gi * v;
        }
      }
      __syncthreads();
      s_s[ty][tx] = sw;
      __syncthreads();
      if (ty == 0 && cin < Cin) {
        A t = A(0);
#pragma unroll
        for (int q = 0; q < 8; ++q) t += s_s[q][tx];
        partial[blk * Cin + cin] = t;
      }
    }
  }
}

void check_args(const at::Tensor& x, const at::Tensor& weight, int64_t r, const char* op) {
  check_pixel_shuffle_prelu_args(x, weight, r, c10::DeviceType::CUDA, op);
}

at::Tensor pixel_shuffle_prelu_cuda(const at::Tensor& x_in, const at::Tensor& weight_in, int64_t r) {
  check_args(x_in, weight_in, r, kFwd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const at::Tensor weight = weight_in.contiguous();
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), Co = Cin / (r * r);
  at::Tensor y = at::empty({N, Co, H * r, W * r}, x.options(), memory_format(layout));
  const int64_t n = y.numel();
  if (n == 0) return y;
  const unsigned int grid = blocks_for(n, kThreads * kUnroll);
  const bool nhwc = layout == Layout::NHWC;
  FASTSR_CUDA_DISPATCH(x.scalar_type(), kFwd, [&] {
    const auto a = ChannelParam<scalar_t>::of(weight);
    const scalar_t* xp = x.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    with_index_type(n, [&](auto index) {
      using I = decltype(index);
      const Geometry<I> geo(r, H, W, Co);
      if (nhwc)
        fwd_kernel<scalar_t, I, true><<<grid, kThreads, 0, stream()>>>(xp, a, yp, static_cast<I>(n), geo);
      else
        fwd_kernel<scalar_t, I, false><<<grid, kThreads, 0, stream()>>>(xp, a, yp, static_cast<I>(n), geo);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> pixel_shuffle_prelu_backward_cuda(const at::Tensor& grad_in,
                                                                     const at::Tensor& x_in,
                                                                     const at::Tensor& weight_in,
                                                                     int64_t r) {
  check_args(x_in, weight_in, r, kBwd);
  const int64_t N = x_in.size(0), Cin = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t Co = Cin / (r * r);
  check_pixel_shuffle_prelu_grad(grad_in, x_in, r, c10::DeviceType::CUDA, kBwd);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const at::Tensor grad = in_layout(grad_in, layout);
  const at::Tensor weight = weight_in.contiguous();
  at::Tensor dx = at::empty_like(x, memory_format(layout));
  at::Tensor dweight = at::empty_like(weight);
  if (Cin == 0) return {dx, dweight.zero_()};
  const ReduceSplit split(layout, N, Cin, H * W);
  const bool shared = weight.numel() == 1;
  FASTSR_CUDA_DISPATCH(x.scalar_type(), kBwd, [&] {
    using A = typename acc<scalar_t>::type;
    const auto acc_dtype = std::is_same<A, double>::value ? at::kDouble : at::kFloat;
    const int64_t slots = x.numel() == 0 ? 1 : split.slots;
    at::Tensor partial = x.numel() == 0 ? at::zeros({slots, Cin}, x.options().dtype(acc_dtype))
                                        : at::empty({slots, Cin}, x.options().dtype(acc_dtype));
    A* pp = partial.data_ptr<A>();
    const auto a = ChannelParam<scalar_t>::of(weight);
    if (x.numel() > 0) {
      if (split.nhwc) {
        bwd_nhwc_kernel<scalar_t><<<split.grid, kThreads, 0, stream()>>>(
            grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), a, dx.data_ptr<scalar_t>(), pp,
            N * H * W, Cin, H, W, r, slots);
      } else {
        bwd_nchw_kernel<scalar_t><<<split.grid, kThreads, 0, stream()>>>(
            grad.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), a, dx.data_ptr<scalar_t>(), pp,
            N, Cin, H, W, r, split.chunks);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    finalize<A>(pp, slots, Cin, SumOut::of(dweight, r * r, shared));
  });
  return {dx, dweight};
}

}  // namespace
}  // namespace cuda
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CUDA, m) {
  m.impl("pixel_shuffle_prelu", &fastsr::cuda::pixel_shuffle_prelu_cuda);
  m.impl("pixel_shuffle_prelu_backward", &fastsr::cuda::pixel_shuffle_prelu_backward_cuda);
}
