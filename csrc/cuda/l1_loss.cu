// CUDA kernels of fastsr::l1_loss and fastsr::l1_loss_backward (csrc/cpu/l1_loss.cpp has
// the contract): one pass reads input and target, writes the elementwise loss ('none') or a
// per-block partial sum, and, when asked, grad_buf = s * dl/dd (s = 1/numel for 'mean').
//   L1: dl/dd = sign(d), 0 at d = 0 and where d is NaN;  Charbonnier: dl/dd = d / sqrt(d^2 + eps^2)
// The partial sums are added in double in a fixed order by one block (deterministic), which
// writes the 0-D loss. The backward multiplies grad_buf by the incoming gradient read on the
// device, so no value crosses to the host.
#include "cuda/common.cuh"
#include "op_checks.h"

#include <string_view>
#include <type_traits>

namespace fastsr {
namespace cuda {
namespace {

constexpr const char* kFwd = "fastsr::l1_loss";
constexpr const char* kBwd = "fastsr::l1_loss_backward";
constexpr int64_t kPerBlock = kThreads * kUnroll * 2;

template <typename T, bool GRAD, bool CHARB, bool NONE>
__global__ void fwd_kernel(const T* __restrict__ x, const T* __restrict__ y, T* __restrict__ loss,
                           T* __restrict__ grad, double* __restrict__ partial, int64_t n,
                           typename acc<T>::type eps2, typename acc<T>::type gscale) {
  using A = typename acc<T>::type;
  __shared__ A smem[32];
  const int64_t begin = static_cast<int64_t>(blockIdx.x) * kPerBlock;
  const int64_t end = begin + kPerBlock < n ? begin + kPerBlock : n;
  A s = A(0);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const A d = static_cast<A>(x[i]) - static_cast<A>(y[i]);
    A l, dl;
    if (CHARB) {
      l = sqrt(d * d + eps2);
      dl = d / l;
    } else {
      l = fabs(d);
      dl = static_cast<A>((d > A(0)) - (d < A(0)));
    }
    if (NONE) loss[i] = static_cast<T>(l);
    else s += l;
    if (GRAD) grad[i] = static_cast<T>(gscale * dl);
  }
  if (!NONE) {
    s = block_sum(s, smem);
    if (threadIdx.x == 0) partial[blockIdx.x] = static_cast<double>(s);
  }
}

// One block adds the partials in a fixed order and writes the 0-D loss (mean: / n).
template <typename T>
__global__ void finalize_loss(const double* __restrict__ partial, int64_t blocks, T* __restrict__ out,
                              double divisor) {
  __shared__ double smem[32];
  double v = 0.0;
  for (int64_t k = threadIdx.x; k < blocks; k += blockDim.x) v += partial[k];
  v = block_sum(v, smem);
  if (threadIdx.x == 0) out[0] = static_cast<T>(v / divisor);
}

template <typename T, bool SCALAR>
__global__ void bwd_kernel(const T* __restrict__ grad_loss, const T* __restrict__ buf,
                           T* __restrict__ out, int64_t n) {
  using A = typename acc<T>::type;
  const A g0 = SCALAR ? static_cast<A>(grad_loss[0]) : A(0);
  int64_t i = static_cast<int64_t>(blockIdx.x) * (kThreads * kUnroll) + threadIdx.x;
#pragma unroll
  for (int u = 0; u < kUnroll; ++u, i += kThreads) {
    if (i < n) {
      const A g = SCALAR ? g0 : static_cast<A>(grad_loss[i]);
      out[i] = static_cast<T>(static_cast<A>(buf[i]) * g);
    }
  }
}

// Picks the compile-time variant of the forward kernel for the run-time flags.
template <typename T>
void launch_fwd(bool grad_on, bool charb, bool none, const T* x, const T* y, T* loss, T* grad,
                double* partial, int64_t n, double eps, double gscale, unsigned int grid) {
  using A = typename acc<T>::type;
  const A e2 = static_cast<A>(eps * eps), gs = static_cast<A>(gscale);
  auto go = [&](auto g, auto c, auto no) {
    fwd_kernel<T, decltype(g)::value, decltype(c)::value, decltype(no)::value>
        <<<grid, kThreads, 0, stream()>>>(x, y, loss, grad, partial, n, e2, gs);
  };
  using t = std::true_type;
  using f = std::false_type;
  if (grad_on) {
    if (charb) none ? go(t{}, t{}, t{}) : go(t{}, t{}, f{});
    else none ? go(t{}, f{}, t{}) : go(t{}, f{}, f{});
  } else {
    if (charb) none ? go(f{}, t{}, t{}) : go(f{}, t{}, f{});
    else none ? go(f{}, f{}, t{}) : go(f{}, f{}, f{});
  }
}

std::tuple<at::Tensor, at::Tensor> l1_loss_cuda(const at::Tensor& input_in, const at::Tensor& target_in,
                                                c10::string_view reduction_str,
                                                std::optional<double> eps, bool compute_grad) {
  check_l1_loss_args(input_in, target_in, eps, c10::DeviceType::CUDA, kFwd);
  const Reduction reduction =
      parse_reduction(std::string_view(reduction_str.data(), reduction_str.size()), kFwd);
  const c10::cuda::CUDAGuard guard(input_in.device());
  const at::MemoryFormat fmt = flat_format(input_in);
  const at::Tensor x = input_in.contiguous(fmt), y = target_in.contiguous(fmt);
  const int64_t n = x.numel();
  const bool none = reduction == Reduction::None;
  at::Tensor loss = none ? at::empty_like(x, fmt) : at::empty({}, x.options());
  at::Tensor grad = compute_grad ? at::empty_like(x, fmt) : at::empty({0}, x.options());
  const unsigned int grid = blocks_for(n, kPerBlock);
  at::Tensor partial = none ? at::Tensor() : at::empty({grid}, x.options().dtype(at::kDouble));
  const double gscale = reduction == Reduction::Mean ? 1.0 / static_cast<double>(n) : 1.0;
  const bool charb = eps.has_value();
  const double e = charb ? *eps : 0.0;
  FASTSR_CUDA_DISPATCH(x.scalar_type(), kFwd, [&] {
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    scalar_t* lp = none ? loss.data_ptr<scalar_t>() : nullptr;
    scalar_t* gp = compute_grad ? grad.data_ptr<scalar_t>() : nullptr;
    double* pp = none ? nullptr : partial.data_ptr<double>();
    if (n > 0) {
      launch_fwd<scalar_t>(compute_grad, charb, none, xp, yp, lp, gp, pp, n, e, gscale, grid);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (!none) {
      // With no elements: sum 0, mean 0/0 = NaN, as torch.
      const double divisor = reduction == Reduction::Mean ? static_cast<double>(n) : 1.0;
      finalize_loss<scalar_t><<<1, kThreads, 0, stream()>>>(pp, n > 0 ? grid : 0, loss.data_ptr<scalar_t>(),
                                                            divisor);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {loss, grad};
}

at::Tensor l1_loss_backward_cuda(const at::Tensor& grad_loss, const at::Tensor& grad_buf_in) {
  check_l1_loss_backward_args(grad_loss, grad_buf_in, c10::DeviceType::CUDA, kBwd);
  const bool scalar = grad_loss.dim() == 0;
  const c10::cuda::CUDAGuard guard(grad_buf_in.device());
  const at::MemoryFormat fmt = flat_format(grad_buf_in);
  const at::Tensor buf = grad_buf_in.contiguous(fmt);
  const at::Tensor gl = scalar ? grad_loss : grad_loss.contiguous(fmt);
  at::Tensor out = at::empty_like(buf, fmt);
  const int64_t n = buf.numel();
  if (n == 0) return out;
  const unsigned int grid = blocks_for(n, kThreads * kUnroll);
  FASTSR_CUDA_DISPATCH(buf.scalar_type(), kBwd, [&] {
    if (scalar)
      bwd_kernel<scalar_t, true><<<grid, kThreads, 0, stream()>>>(
          gl.data_ptr<scalar_t>(), buf.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n);
    else
      bwd_kernel<scalar_t, false><<<grid, kThreads, 0, stream()>>>(
          gl.data_ptr<scalar_t>(), buf.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CUDA, m) {
  m.impl("l1_loss", &fastsr::cuda::l1_loss_cuda);
  m.impl("l1_loss_backward", &fastsr::cuda::l1_loss_backward_cuda);
}
