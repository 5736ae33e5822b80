// bias + scaled residual add, the epilogue of the second conv of a residual block:
//   y = residual + scale * (x + bias[c])
// Backward (from grad g): dresidual = g (no kernel: autograd passes g on),
//   dx = scale * g,  dbias[c] = scale * sum_{n,h,w} g
// When scale == 1, dx is g itself and only the reduction runs (fastsr::channel_sum).
#include "cpu/common.h"
#include "op_checks.h"

namespace fastsr {
namespace {

constexpr const char* kFwd = "fastsr::bias_residual";
constexpr const char* kBwd = "fastsr::bias_residual_backward";
constexpr const char* kSum = "fastsr::channel_sum";

template <typename T, typename A>
FASTSR_INLINE void fwd_span_impl(T* __restrict__ y, const T* __restrict__ x,
                                 const T* __restrict__ r, int64_t n, A b, A s) {
  for (int64_t i = 0; i < n; ++i) store(y, i, load(r, i) + s * (load(x, i) + b));
}

template <typename T, typename A>
FASTSR_INLINE void fwd_rows_impl(T* __restrict__ y, const T* __restrict__ x,
                                 const T* __restrict__ r, int64_t npix, int64_t C,
                                 const A* __restrict__ b, A s) {
  for (int64_t p = 0; p < npix; ++p)
    for (int64_t c = 0; c < C; ++c)
      store(y, p * C + c, load(r, p * C + c) + s * (load(x, p * C + c) + b[c]));
}

// dx = s * g (when dx != nullptr) and the plain sum of g.
template <typename T, typename A>
FASTSR_INLINE void bwd_span_impl(T* __restrict__ dx, const T* __restrict__ g, int64_t n, A s,
                                 A* sum) {
  A acc_sum = 0;
  if (dx != nullptr) {
#pragma omp simd reduction(+ : acc_sum)
    for (int64_t i = 0; i < n; ++i) {
      const A gi = load(g, i);
      store(dx, i, s * gi);
      acc_sum += gi;
    }
  } else {
#pragma omp simd reduction(+ : acc_sum)
    for (int64_t i = 0; i < n; ++i) acc_sum += load(g, i);
  }
  *sum = acc_sum;
}

template <typename T, typename A>
FASTSR_INLINE void bwd_rows_impl(T* __restrict__ dx, const T* __restrict__ g, int64_t npix,
                                 int64_t C, A s, A* __restrict__ sum) {
  for (int64_t c = 0; c < C; ++c) sum[c] = A(0);
  for (int64_t p = 0; p < npix; ++p) {
    for (int64_t c = 0; c < C; ++c) {
      const A gi = load(g, p * C + c);
      if (dx != nullptr) store(dx, p * C + c, s * gi);
      sum[c] += gi;
    }
  }
}

#define FASTSR_DEFINE_FOR(T, A)                                                                \
  FASTSR_MULTIVERSION void fwd_span(T* y, const T* x, const T* r, int64_t n, A b, A s) {       \
    fwd_span_impl(y, x, r, n, b, s);                                                           \
  }                                                                                            \
  FASTSR_MULTIVERSION void fwd_rows(T* y, const T* x, const T* r, int64_t np, int64_t C,       \
                                    const A* b, A s) {                                         \
    fwd_rows_impl(y, x, r, np, C, b, s);                                                       \
  }                                                                                            \
  FASTSR_MULTIVERSION void bwd_span(T* dx, const T* g, int64_t n, A s, A* sum) {               \
    bwd_span_impl(dx, g, n, s, sum);                                                           \
  }                                                                                            \
  FASTSR_MULTIVERSION void bwd_rows(T* dx, const T* g, int64_t np, int64_t C, A s, A* sum) {   \
    if (dx != nullptr)                                                                         \
      bwd_rows_impl(dx, g, np, C, s, sum);                                                     \
    else                                                                                       \
      bwd_rows_impl(static_cast<T*>(nullptr), g, np, C, s, sum);                               \
  }
FASTSR_DEFINE_FOR(float, float)
FASTSR_DEFINE_FOR(bf16_t, float)
FASTSR_DEFINE_FOR(double, double)
#undef FASTSR_DEFINE_FOR

at::Tensor bias_residual_cpu(const at::Tensor& x_in, const at::Tensor& bias,
                             const at::Tensor& residual_in, double scale) {
  check_bias_residual_args(x_in, bias, residual_in, scale, c10::DeviceType::CPU, kFwd);
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const at::Tensor r = in_layout(residual_in, layout);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  at::Tensor y = at::empty_like(x, memory_format(layout));
  if (x.numel() == 0) return y;
  FASTSR_DISPATCH_FLOATING(x.scalar_type(), kFwd, [&] {
    using A = typename acc<scalar_t>::type;
    const at::Tensor b_t = channel_param<A>(bias, C);
    const A* b = b_t.data_ptr<A>();
    const A s = static_cast<A>(scale);
    auto* xp = ptr<scalar_t>(x);
    auto* rp = ptr<scalar_t>(r);
    auto* yp = ptr<scalar_t>(y);
    if (layout == Layout::NCHW) {
      for_each_plane_chunk(N, C, HW, [&](int64_t, int64_t c, int64_t off, int64_t len) {
        fwd_span(yp + off, xp + off, rp + off, len, b[c], s);
      });
    } else {
      for_each_pixel_chunk(N * HW, C, [&](int64_t, int64_t p0, int64_t np) {
        fwd_rows(yp + p0 * C, xp + p0 * C, rp + p0 * C, np, C, b, s);
      });
    }
  });
  return y;
}

// Shared by bias_residual_backward (write_dx) and channel_sum (reduction only).
std::tuple<at::Tensor, at::Tensor> scale_and_sum(const at::Tensor& g_in, double scale,
                                                 bool write_dx, at::ScalarType sum_dtype) {
  const Layout layout = layout_of(g_in);
  const at::Tensor g = in_layout(g_in, layout);
  const int64_t N = g.size(0), C = g.size(1), HW = g.size(2) * g.size(3);
  at::Tensor dx = write_dx ? at::empty_like(g, memory_format(layout)) : at::Tensor();
  at::Tensor sum;
  FASTSR_DISPATCH_FLOATING(g.scalar_type(), kBwd, [&] {
    using A = typename acc<scalar_t>::type;
    const A s = static_cast<A>(scale);
    auto* gp = ptr<scalar_t>(g);
    auto* dp = write_dx ? ptr<scalar_t>(dx) : nullptr;
    const int64_t slots = g.numel() == 0 ? 0 : partial_slots(layout, N, C, HW);
    std::vector<A> partial(slots);
    if (g.numel() > 0) {
      if (layout == Layout::NCHW) {
        for_each_plane_chunk(N, C, HW, [&](int64_t t, int64_t, int64_t off, int64_t len) {
          bwd_span(dp ? dp + off : nullptr, gp + off, len, s, &partial[t]);
        });
      } else {
        for_each_pixel_chunk(N * HW, C, [&](int64_t t, int64_t p0, int64_t np) {
          bwd_rows(dp ? dp + p0 * C : nullptr, gp + p0 * C, np, C, s, &partial[t * C]);
        });
      }
    }
    sum = reduce_partials(partial, layout, N, C, HW, scale, sum_dtype);
  });
  return {dx, sum};
}

std::tuple<at::Tensor, at::Tensor> bias_residual_backward_cpu(const at::Tensor& grad,
                                                              const at::Tensor& bias,
                                                              double scale) {
  check_channel_sum_args(grad, "grad", scale, c10::DeviceType::CPU, kBwd);
  check_channel_param(bias, grad, /*allow_shared=*/false, kBwd, "bias");
  return scale_and_sum(grad, scale, /*write_dx=*/true, bias.scalar_type());
}

at::Tensor channel_sum_cpu(const at::Tensor& x, double scale, at::ScalarType dtype) {
  check_channel_sum_args(x, "x", scale, c10::DeviceType::CPU, kSum);
  TORCH_CHECK_TYPE(at::isFloatingType(dtype), kSum, ": dtype must be a floating dtype, got ", dtype);
  return std::get<1>(scale_and_sum(x, scale, /*write_dx=*/false, dtype));
}

}  // namespace

}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CPU, m) {
  m.impl("bias_residual", &fastsr::bias_residual_cpu);
  m.impl("bias_residual_backward", &fastsr::bias_residual_backward_cpu);
  m.impl("channel_sum", &fastsr::channel_sum_cpu);
}
