// L1 and Charbonnier loss with the gradient computed in the forward pass
// (the Liger-Kernel fused cross-entropy idea), so the backward is a scale:
//   d = input - target
//   L1:          l = |d|,                        dl/dd = sign(d)   (0 at d = 0 and at NaN, as torch)
//   Charbonnier: l = sqrt(d^2 + eps^2),          dl/dd = d / l     (Lai et al. 2017, LapSRN)
//   reduction:   none -> l (elementwise), sum -> sum l, mean -> sum l / numel
// fastsr::l1_loss returns (loss, grad_buf) with grad_buf = s * dl/dd, s = 1/numel for mean and
// 1 otherwise (an empty (0,) tensor when compute_grad is false: eval-time loss reads input and
// target once and writes nothing but the loss). fastsr::l1_loss_backward is grad_buf * grad_loss
// (grad_loss a scalar, or elementwise for reduction none).
//
// Layout: input and target are walked as flat memory, both contiguous or both channels_last
// (the layout of input; a target in another layout, or a non-contiguous input, is copied
// first). The outputs take that layout.
// The sum is over fixed chunks added in double in a fixed order: the result does not depend
// on the number of threads.
#include "cpu/common.h"
#include "op_checks.h"

#include <string_view>
#include <vector>

namespace fastsr {
namespace {

constexpr const char* kFwd = "fastsr::l1_loss";
constexpr const char* kBwd = "fastsr::l1_loss_backward";
constexpr int64_t kChunk = 16384;


// ---- inner loops (compiled per ISA) -----------------------------------------------------
template <bool CHARB, bool GRAD, bool NONE, typename T, typename A>
FASTSR_INLINE A fwd_span_impl(T* __restrict__ loss, T* __restrict__ grad, const T* __restrict__ x,
                              const T* __restrict__ y, int64_t n, A eps2, A gscale) {
  A s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) {
    const A d = load(x, i) - load(y, i);
    A l, dl;
    if (CHARB) {
      l = std::sqrt(d * d + eps2);
      dl = d / l;
    } else {
      l = std::abs(d);
      // sign(d): 0 at d = 0 and NaN, as torch.sign. Written without a conditional, which
      // GCC keeps as branches here (mispredicted on half of the elements of random data).
      dl = A(d > A(0)) - A(d < A(0));
    }
    if (NONE) {
      store(loss, i, l);
    } else {
      s += l;
    }
    if (GRAD) store(grad, i, gscale * dl);
  }
  return s;
}

template <typename T, typename A>
FASTSR_INLINE void fwd_dispatch(T* loss, T* grad, const T* x, const T* y, int64_t n, A eps2,
                                A gscale, bool charb, bool none, A* sum) {
  // Every combination is its own loop, so no branch is left inside the vectorised body.
  if (charb) {
    if (grad != nullptr) {
      *sum = none ? fwd_span_impl<true, true, true>(loss, grad, x, y, n, eps2, gscale)
                  : fwd_span_impl<true, true, false>(loss, grad, x, y, n, eps2, gscale);
    } else {
      *sum = none ? fwd_span_impl<true, false, true>(loss, grad, x, y, n, eps2, gscale)
                  : fwd_span_impl<true, false, false>(loss, grad, x, y, n, eps2, gscale);
    }
  } else {
    if (grad != nullptr) {
      *sum = none ? fwd_span_impl<false, true, true>(loss, grad, x, y, n, eps2, gscale)
                  : fwd_span_impl<false, true, false>(loss, grad, x, y, n, eps2, gscale);
    } else {
      *sum = none ? fwd_span_impl<false, false, true>(loss, grad, x, y, n, eps2, gscale)
                  : fwd_span_impl<false, false, false>(loss, grad, x, y, n, eps2, gscale);
    }
  }
}

template <typename T, typename A>
FASTSR_INLINE void bwd_span_impl(T* __restrict__ out, const T* __restrict__ gbuf,
                                 const T* __restrict__ gloss, int64_t n, A scalar) {
  if (gloss == nullptr) {
    for (int64_t i = 0; i < n; ++i) store(out, i, load(gbuf, i) * scalar);
  } else {
    for (int64_t i = 0; i < n; ++i) store(out, i, load(gbuf, i) * load(gloss, i));
  }
}

#define FASTSR_DEFINE_FOR(T, A)                                                                \
  FASTSR_MULTIVERSION void fwd_span(T* loss, T* grad, const T* x, const T* y, int64_t n,       \
                                    A eps2, A gscale, bool charb, bool none, A* sum) {         \
    fwd_dispatch(loss, grad, x, y, n, eps2, gscale, charb, none, sum);                         \
  }                                                                                            \
  FASTSR_MULTIVERSION void bwd_span(T* out, const T* gbuf, const T* gloss, int64_t n,          \
                                    A scalar) {                                                \
    bwd_span_impl(out, gbuf, gloss, n, scalar);                                                \
  }
FASTSR_DEFINE_FOR(float, float)
FASTSR_DEFINE_FOR(bf16_t, float)
FASTSR_DEFINE_FOR(double, double)
#undef FASTSR_DEFINE_FOR

inline int64_t chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }

template <typename F>
inline void for_each_chunk(int64_t n, const F& f) {
  at::parallel_for(0, chunks(n), 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t off = t * kChunk;
      f(t, off, std::min(kChunk, n - off));
    }
  });
}

// ---- ops --------------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor> l1_loss_cpu(const at::Tensor& input_in,
                                               const at::Tensor& target_in,
                                               c10::string_view reduction_str,
                                               std::optional<double> eps, bool compute_grad) {
  check_l1_loss_args(input_in, target_in, eps, c10::DeviceType::CPU, kFwd);
  const Reduction reduction =
      parse_reduction(std::string_view(reduction_str.data(), reduction_str.size()), kFwd);
  const at::MemoryFormat fmt = flat_format(input_in);
  const at::Tensor input = input_in.contiguous(fmt);
  const at::Tensor target = target_in.contiguous(fmt);
  const int64_t n = input.numel();
  at::Tensor loss = reduction == Reduction::None ? at::empty_like(input, fmt)
                                                 : at::empty({}, input.options());
  at::Tensor grad = compute_grad ? at::empty_like(input, fmt) : at::empty({0}, input.options());
  FASTSR_DISPATCH_FLOATING(input.scalar_type(), kFwd, [&] {
    using A = typename acc<scalar_t>::type;
    const A eps2 = eps.has_value() ? static_cast<A>(*eps * *eps) : A(0);
    const A gscale = reduction == Reduction::Mean ? static_cast<A>(1.0 / static_cast<double>(n))
                                                  : A(1);
    const bool none = reduction == Reduction::None;
    auto* xp = ptr<scalar_t>(input);
    auto* yp = ptr<scalar_t>(target);
    auto* lp = none ? ptr<scalar_t>(loss) : nullptr;
    auto* gp = compute_grad ? ptr<scalar_t>(grad) : nullptr;
    std::vector<A> partial(chunks(n), A(0));
    for_each_chunk(n, [&](int64_t t, int64_t off, int64_t len) {
      fwd_span(none ? lp + off : nullptr, gp != nullptr ? gp + off : nullptr, xp + off, yp + off,
               len, eps2, gscale, eps.has_value(), none, &partial[t]);
    });
    if (!none) {
      double s = 0.0;
      for (const A v : partial) s += static_cast<double>(v);
      if (reduction == Reduction::Mean) s /= static_cast<double>(n);  // 0/0 = NaN, as torch
      loss.fill_(s);
    }
  });
  return {loss, grad};
}

at::Tensor l1_loss_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& grad_buf_in) {
  check_l1_loss_backward_args(grad_loss, grad_buf_in, c10::DeviceType::CPU, kBwd);
  const bool scalar = grad_loss.dim() == 0;
  const at::MemoryFormat fmt = flat_format(grad_buf_in);
  const at::Tensor gbuf = grad_buf_in.contiguous(fmt);
  at::Tensor out = at::empty_like(gbuf, fmt);
  const int64_t n = gbuf.numel();
  if (n == 0) return out;
  FASTSR_DISPATCH_FLOATING(gbuf.scalar_type(), kBwd, [&] {
    using A = typename acc<scalar_t>::type;
    at::Tensor gl;
    A s = A(1);
    if (scalar) {
      s = static_cast<A>(grad_loss.item<double>());
    } else {
      gl = grad_loss.contiguous(fmt);
    }
    auto* bp = ptr<scalar_t>(gbuf);
    auto* gp = scalar ? nullptr : ptr<scalar_t>(gl);
    auto* op = ptr<scalar_t>(out);
    for_each_chunk(n, [&](int64_t, int64_t off, int64_t len) {
      bwd_span(op + off, bp + off, gp != nullptr ? gp + off : nullptr, len, s);
    });
  });
  return out;
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CPU, m) {
  m.impl("l1_loss", &fastsr::l1_loss_cpu);
  m.impl("l1_loss_backward", &fastsr::l1_loss_backward_cpu);
}
