// PixelShuffle(r) then PReLU, the activation of the sub-pixel upsampling stage:
//   y[n, c, h*r + i, w*r + j] = PReLU(x[n, c*r*r + i*r + j, h, w]; weight[c])
// Backward (from grad g, v = x at the matching position):
//   dx[n, c*r*r + i*r + j, h, w] = g[n, c, h*r + i, w*r + j] * (v > 0 ? 1 : weight[c])
//   dweight[c] = sum_{v <= 0} g * v   (summed over c too when the weight is shared)
// One read of x and one write of y forward; one read of g and x and one write of dx
// backward, with the dweight reduction fused into the same pass.
//
// Layouts (no copy for either): the output takes the memory format of x.
//   NCHW: output row (n, c, h*r + i) interleaves input rows h of the r planes
//         c*r*r + i*r + j, j < r: r contiguous reads, one contiguous write.
//   NHWC: the C*r*r channels of input pixel (n, h, w) go to the r*r output pixels
//         (h*r + i, w*r + j), each a contiguous run of C; for fixed i the r pixels j are
//         adjacent, so every output row is written as contiguous runs of r*C elements.
// Other strides are copied to NCHW first. The work split depends only on the shape, and
// dweight partial sums are added in a fixed order in double: the result does not depend
// on the number of threads.
#include "cpu/common.h"
#include "op_checks.h"

#include <array>
#include <type_traits>
#include <vector>

namespace fastsr {
namespace {

constexpr const char* kFwd = "fastsr::pixel_shuffle_prelu";
constexpr const char* kBwd = "fastsr::pixel_shuffle_prelu_backward";

// Compile-time upscale factor (2, 3, 4) so that the interleave loops unroll and vectorise;
// R = 0 is the generic run-time path (any r >= 1).
template <int R> struct RTag {};

template <int R>
FASTSR_INLINE int64_t factor(int64_t r) { return R > 0 ? R : r; }

// ---- inner loops (compiled per ISA) -----------------------------------------------------
// Generic path (any r, also the reference for the fast path's index math): plain loops.
// NCHW forward over input rows [h0, h1) of one output channel c of one image.
//   xb: input plane c*r*r of image n;  yb: output plane c of image n.
template <int R, typename T, typename A>
FASTSR_INLINE void fwd_nchw_generic(T* __restrict__ yb, const T* __restrict__ xb, int64_t h0,
                                 int64_t h1, int64_t HW, int64_t W, int64_t r_rt, A a) {
  const int64_t r = factor<R>(r_rt);
  const int64_t Wr = W * r;
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t i = 0; i < r; ++i) {
      T* yrow = yb + (h * r + i) * Wr;
      const T* xrow = xb + i * r * HW + h * W;
      for (int64_t w = 0; w < W; ++w) {
#pragma GCC unroll 4
        for (int64_t j = 0; j < r; ++j) {
          const A v = load(xrow, j * HW + w);
          store(yrow, w * r + j, v > A(0) ? v : a * v);
        }
      }
    }
  }
}

template <int R, typename T, typename A>
FASTSR_INLINE A bwd_nchw_generic(T* __restrict__ dxb, const T* __restrict__ gb,
                              const T* __restrict__ xb, int64_t h0, int64_t h1, int64_t HW,
                              int64_t W, int64_t r_rt, A a) {
  const int64_t r = factor<R>(r_rt);
  const int64_t Wr = W * r;
  A sum_dw = 0;
  for (int64_t h = h0; h < h1; ++h) {
    for (int64_t i = 0; i < r; ++i) {
      const T* grow = gb + (h * r + i) * Wr;
      const T* xrow = xb + i * r * HW + h * W;
      T* dxrow = dxb + i * r * HW + h * W;
      A s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t w = 0; w < W; ++w) {
#pragma GCC unroll 4
        for (int64_t j = 0; j < r; ++j) {
          const A v = load(xrow, j * HW + w);
          const A gv = load(grow, w * r + j);
          const bool pos = v > A(0);
          store(dxrow, j * HW + w, pos ? gv : a * gv);
          s += pos ? A(0) : gv * v;
        }
      }
      sum_dw += s;
    }
  }
  return sum_dw;
}

// NHWC forward over input pixels [p0, p0 + np) (p = (n*H + h)*W + w); Cin = C*r*r.
template <int R, typename T, typename A>
FASTSR_INLINE void fwd_nhwc_generic(T* __restrict__ y, const T* __restrict__ x, int64_t p0,
                                 int64_t np, int64_t W, int64_t C, int64_t r_rt,
                                 const A* __restrict__ a) {
  const int64_t r = factor<R>(r_rt);
  const int64_t r2 = r * r, Cin = C * r2, Wr = W * r;
  for (int64_t p = p0; p < p0 + np; ++p) {
    const int64_t q = p / W, w = p - q * W;  // q = n*H + h
    const T* xp = x + p * Cin;
    for (int64_t i = 0; i < r; ++i) {
      // r adjacent output pixels (q*r + i, w*r + j), j < r: one run of r*C elements.
      T* yp = y + ((q * r + i) * Wr + w * r) * C;
      for (int64_t c = 0; c < C; ++c) {
        const A ac = a[c];
#pragma GCC unroll 4
        for (int64_t j = 0; j < r; ++j) {
          const A v = load(xp, c * r2 + i * r + j);
          store(yp, j * C + c, v > A(0) ? v : ac * v);
        }
      }
    }
  }
}

// NHWC backward; adds the dweight partials of these pixels to sum_dw[c] (zeroed here).
template <int R, typename T, typename A>
FASTSR_INLINE void bwd_nhwc_generic(T* __restrict__ dx, const T* __restrict__ g,
                                 const T* __restrict__ x, int64_t p0, int64_t np, int64_t W,
                                 int64_t C, int64_t r_rt, const A* __restrict__ a,
                                 A* __restrict__ sum_dw) {
  const int64_t r = factor<R>(r_rt);
  const int64_t r2 = r * r, Cin = C * r2, Wr = W * r;
  for (int64_t c = 0; c < C; ++c) sum_dw[c] = A(0);
  for (int64_t p = p0; p < p0 + np; ++p) {
    const int64_t q = p / W, w = p - q * W;
    const T* xp = x + p * Cin;
    T* dxp = dx + p * Cin;
    for (int64_t i = 0; i < r; ++i) {
      const T* gp = g + ((q * r + i) * Wr + w * r) * C;
      for (int64_t c = 0; c < C; ++c) {
        const A ac = a[c];
        A s = 0;
#pragma GCC unroll 4
        for (int64_t j = 0; j < r; ++j) {
          const A v = load(xp, c * r2 + i * r + j);
          const A gv = load(gp, j * C + c);
          const bool pos = v > A(0);
          store(dxp, c * r2 + i * r + j, pos ? gv : ac * gv);
          s += pos ? A(0) : gv * v;
        }
        sum_dw[c] += s;
      }
    }
  }
}


// Fast path (R = 2, 3, 4). The shuffle is a (de)interleave of groups of R (NCHW) or R*R
// (NHWC) elements; the vectoriser handles that well on acc_t (fp32/fp64) but not on 16-bit
// bf16, and not when it is mixed with the PReLU arithmetic and a reduction. So each step is
// its own simple loop over a small L1-resident scratch buffer: convert (contiguous),
// (de)interleave (one group per iteration), PReLU (contiguous, per channel vectorised).

template <typename T, typename A>
FASTSR_INLINE void to_acc(A* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  for (int64_t k = 0; k < n; ++k) dst[k] = load(src, k);
}
template <typename T, typename A>
FASTSR_INLINE void from_acc(T* __restrict__ dst, const A* __restrict__ src, int64_t n) {
  for (int64_t k = 0; k < n; ++k) store(dst, k, src[k]);
}
// dst[k * ds + m] = src[m * G + k], k < G, m < n.
template <int G, typename A>
FASTSR_INLINE void deinterleave(A* __restrict__ dst, int64_t ds, const A* __restrict__ src, int64_t n) {
  for (int64_t m = 0; m < n; ++m) {
#pragma GCC unroll 16
    for (int64_t k = 0; k < G; ++k) dst[k * ds + m] = src[m * G + k];
  }
}
// dst[m * G + k] = src[k * ss + m], k < G, m < n.
template <int G, typename A>
FASTSR_INLINE void interleave(A* __restrict__ dst, const A* __restrict__ src, int64_t ss, int64_t n) {
  for (int64_t m = 0; m < n; ++m) {
#pragma GCC unroll 16
    for (int64_t k = 0; k < G; ++k) dst[m * G + k] = src[k * ss + m];
  }
}
// The same from / to storage type T, through `scratch` (n * G elements) when T is not A.
template <int G, typename T, typename A>
FASTSR_INLINE void deinterleave_load(A* dst, int64_t ds, const T* src, int64_t n, A* scratch) {
  if constexpr (std::is_same<T, A>::value) {
    deinterleave<G>(dst, ds, src, n);
  } else {
    to_acc(scratch, src, n * G);
    deinterleave<G>(dst, ds, scratch, n);
  }
}
template <int G, typename T, typename A>
FASTSR_INLINE void interleave_store(T* dst, const A* src, int64_t ss, int64_t n, A* scratch) {
  if constexpr (std::is_same<T, A>::value) {
    interleave<G>(dst, src, ss, n);
  } else {
    interleave<G>(scratch, src, ss, n);
    from_acc(dst, scratch, n * G);
  }
}

// NCHW fast path. A task's rows [h0, h1) of input plane k = i*R + j are one contiguous span,
// so they are processed in segments of up to kSeg elements: whole rows when W < kSeg (many
// rows per segment: no per-row vector remainders in the PReLU loops), else one row cut
// into column blocks. t[j][m] holds the segment of plane i*R + j; only the interleave with
// the output rows goes row by row.
constexpr int64_t kSeg = 512;

template <typename F>
FASTSR_INLINE void for_each_segment(int64_t h0, int64_t h1, int64_t W, const F& f) {
  const int64_t rows = W >= kSeg ? 1 : kSeg / W;
  for (int64_t hs = h0; hs < h1; hs += rows) {
    const int64_t he = std::min(h1, hs + rows);
    for (int64_t w0 = 0; w0 < W; w0 += kSeg) f(hs, he, w0, std::min(kSeg, W - w0));
  }
}

template <int R, typename T, typename A>
FASTSR_INLINE void fwd_nchw_fast(T* __restrict__ yb, const T* __restrict__ xb, int64_t h0,
                                 int64_t h1, int64_t HW, int64_t W, A a) {
  A t[R * kSeg], scratch[R * kSeg];
  const int64_t Wr = W * R;
  for_each_segment(h0, h1, W, [&](int64_t hs, int64_t he, int64_t w0, int64_t nw) {
    const int64_t len = (he - hs) * nw;  // nw == W whenever he - hs > 1
    for (int64_t i = 0; i < R; ++i) {
      for (int64_t j = 0; j < R; ++j) {
        const T* xj = xb + (i * R + j) * HW + hs * W + w0;
        A* tj = t + j * kSeg;
        for (int64_t m = 0; m < len; ++m) {
          const A v = load(xj, m);
          tj[m] = v > A(0) ? v : a * v;
        }
      }
      for (int64_t h = hs; h < he; ++h)
        interleave_store<R>(yb + (h * R + i) * Wr + w0 * R, t + (h - hs) * nw, kSeg, nw, scratch);
    }
  });
}

template <int R, typename T, typename A>
FASTSR_INLINE A bwd_nchw_fast(T* __restrict__ dxb, const T* __restrict__ gb,
                              const T* __restrict__ xb, int64_t h0, int64_t h1, int64_t HW,
                              int64_t W, A a) {
  A t[R * kSeg], scratch[R * kSeg];
  const int64_t Wr = W * R;
  A sum_dw = 0;
  for_each_segment(h0, h1, W, [&](int64_t hs, int64_t he, int64_t w0, int64_t nw) {
    const int64_t len = (he - hs) * nw;
    for (int64_t i = 0; i < R; ++i) {
      for (int64_t h = hs; h < he; ++h)
        deinterleave_load<R>(t + (h - hs) * nw, kSeg, gb + (h * R + i) * Wr + w0 * R, nw, scratch);
      for (int64_t j = 0; j < R; ++j) {
        const int64_t off = (i * R + j) * HW + hs * W + w0;
        const T* xj = xb + off;
        T* dxj = dxb + off;
        const A* tj = t + j * kSeg;
        A s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t m = 0; m < len; ++m) {
          const A v = load(xj, m);
          const A gv = tj[m];
          const bool pos = v > A(0);
          store(dxj, m, pos ? gv : a * gv);
          s += pos ? A(0) : gv * v;
        }
        sum_dw += s;
      }
    }
  });
  return sum_dw;
}

// NHWC, per input pixel: xt[k][c] = x[c*R*R + k] (k = i*R + j), then each output run
// (pixel row q*R + i, columns w*R .. w*R + R - 1) is R contiguous runs of C channels.
template <int R, typename T, typename A>
FASTSR_INLINE void fwd_nhwc_fast(T* __restrict__ y, const T* __restrict__ x, int64_t p0,
                                 int64_t np, int64_t W, int64_t C, const A* __restrict__ a) {
  constexpr int64_t R2 = R * R;
  const int64_t Cin = C * R2, Wr = W * R;
  std::vector<A> buf(3 * Cin);
  A* xt = buf.data();
  A* scratch = xt + Cin;
  A* out = scratch + Cin;
  for (int64_t p = p0; p < p0 + np; ++p) {
    const int64_t q = p / W, w = p - q * W;
    deinterleave_load<R2>(xt, C, x + p * Cin, C, scratch);
    for (int64_t i = 0; i < R; ++i) {
      T* yp = y + ((q * R + i) * Wr + w * R) * C;
      const A* xi = xt + i * R * C;  // R runs of C: k = i*R + j, j < R
      A* o = std::is_same<T, A>::value ? reinterpret_cast<A*>(yp) : out;
      for (int64_t j = 0; j < R; ++j)
        for (int64_t c = 0; c < C; ++c) {
          const A v = xi[j * C + c];
          o[j * C + c] = v > A(0) ? v : a[c] * v;
        }
      if constexpr (!std::is_same<T, A>::value) from_acc(yp, out, R * C);
    }
  }
}

template <int R, typename T, typename A>
FASTSR_INLINE void bwd_nhwc_fast(T* __restrict__ dx, const T* __restrict__ g,
                                 const T* __restrict__ x, int64_t p0, int64_t np, int64_t W,
                                 int64_t C, const A* __restrict__ a, A* __restrict__ sum_dw) {
  constexpr int64_t R2 = R * R;
  const int64_t Cin = C * R2, Wr = W * R;
  std::vector<A> buf(4 * Cin);
  A* xt = buf.data();
  A* dt = xt + Cin;
  A* scratch = dt + Cin;
  A* gt = scratch + Cin;
  for (int64_t c = 0; c < C; ++c) sum_dw[c] = A(0);
  for (int64_t p = p0; p < p0 + np; ++p) {
    const int64_t q = p / W, w = p - q * W;
    deinterleave_load<R2>(xt, C, x + p * Cin, C, scratch);
    for (int64_t i = 0; i < R; ++i) {
      const T* gp = g + ((q * R + i) * Wr + w * R) * C;
      to_acc(gt, gp, R * C);
      for (int64_t j = 0; j < R; ++j) {
        const A* xk = xt + (i * R + j) * C;
        const A* gk = gt + j * C;
        A* dk = dt + (i * R + j) * C;
        for (int64_t c = 0; c < C; ++c) {
          const A v = xk[c], gv = gk[c];
          const bool pos = v > A(0);
          dk[c] = pos ? gv : a[c] * gv;
          sum_dw[c] += pos ? A(0) : gv * v;
        }
      }
    }
    interleave_store<R2>(dx + p * Cin, dt, C, C, scratch);
  }
}

#define FASTSR_DEFINE_FOR_R(T, A, R)                                                            \
  FASTSR_MULTIVERSION void fwd_nchw(RTag<R>, T* yb, const T* xb, int64_t h0, int64_t h1,       \
                                    int64_t HW, int64_t W, int64_t r, A a) {                   \
    if constexpr (R == 0) fwd_nchw_generic<R>(yb, xb, h0, h1, HW, W, r, a);                    \
    else fwd_nchw_fast<R>(yb, xb, h0, h1, HW, W, a);                                           \
  }                                                                                            \
  FASTSR_MULTIVERSION A bwd_nchw(RTag<R>, T* dxb, const T* gb, const T* xb, int64_t h0,        \
                                 int64_t h1, int64_t HW, int64_t W, int64_t r, A a) {          \
    if constexpr (R == 0) return bwd_nchw_generic<R>(dxb, gb, xb, h0, h1, HW, W, r, a);        \
    else return bwd_nchw_fast<R>(dxb, gb, xb, h0, h1, HW, W, a);                               \
  }                                                                                            \
  FASTSR_MULTIVERSION void fwd_nhwc(RTag<R>, T* y, const T* x, int64_t p0, int64_t np,         \
                                    int64_t W, int64_t C, int64_t r, const A* a) {             \
    if constexpr (R == 0) fwd_nhwc_generic<R>(y, x, p0, np, W, C, r, a);                       \
    else fwd_nhwc_fast<R>(y, x, p0, np, W, C, a);                                              \
  }                                                                                            \
  FASTSR_MULTIVERSION void bwd_nhwc(RTag<R>, T* dx, const T* g, const T* x, int64_t p0,        \
                                    int64_t np, int64_t W, int64_t C, int64_t r, const A* a,   \
                                    A* sw) {                                                   \
    if constexpr (R == 0) bwd_nhwc_generic<R>(dx, g, x, p0, np, W, C, r, a, sw);               \
    else bwd_nhwc_fast<R>(dx, g, x, p0, np, W, C, a, sw);                                      \
  }
#define FASTSR_DEFINE_FOR(T, A) \
  FASTSR_DEFINE_FOR_R(T, A, 0)  \
  FASTSR_DEFINE_FOR_R(T, A, 2)  \
  FASTSR_DEFINE_FOR_R(T, A, 3)  \
  FASTSR_DEFINE_FOR_R(T, A, 4)
FASTSR_DEFINE_FOR(float, float)
FASTSR_DEFINE_FOR(bf16_t, float)
FASTSR_DEFINE_FOR(double, double)
#undef FASTSR_DEFINE_FOR
#undef FASTSR_DEFINE_FOR_R

// Calls f(RTag<R>{}) with R = r for the specialised factors, R = 0 otherwise.
template <typename F>
inline void dispatch_factor(int64_t r, const F& f) {
  switch (r) {
    case 2: f(RTag<2>{}); break;
    case 3: f(RTag<3>{}); break;
    case 4: f(RTag<4>{}); break;
    default: f(RTag<0>{}); break;
  }
}

// ---- work split -----------------------------------------------------------------------
// NCHW: task = (n, c, block of `rows` input rows), `rows` fixed by the shape so that a
// task covers about kPlaneChunk output elements.
struct NchwSplit {
  int64_t rows, blocks;
  NchwSplit(int64_t H, int64_t W, int64_t r) {
    rows = std::max<int64_t>(1, kPlaneChunk / std::max<int64_t>(1, W * r * r));
    blocks = (H + rows - 1) / rows;
  }
};

template <typename F>
inline void for_each_nchw_task(int64_t N, int64_t C, const NchwSplit& s, int64_t H, const F& f) {
  const int64_t tasks = N * C * s.blocks;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t plane = t / s.blocks;  // n*C + c
      const int64_t h0 = (t % s.blocks) * s.rows;
      f(t, plane, h0, std::min(H, h0 + s.rows));
    }
  });
}

// ---- checks ---------------------------------------------------------------------------
void check_args(const at::Tensor& x, const at::Tensor& weight, int64_t r, const char* op) {
  check_pixel_shuffle_prelu_args(x, weight, r, c10::DeviceType::CPU, op);
}

// ---- ops ------------------------------------------------------------------------------
at::Tensor pixel_shuffle_prelu_cpu(const at::Tensor& x_in, const at::Tensor& weight, int64_t r) {
  check_args(x_in, weight, r, kFwd);
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t C = Cin / (r * r);
  at::Tensor y = at::empty({N, C, H * r, W * r}, x.options(), memory_format(layout));
  if (x.numel() == 0) return y;
  FASTSR_DISPATCH_FLOATING(x.scalar_type(), kFwd, [&] {
    using A = typename acc<scalar_t>::type;
    const at::Tensor a_t = channel_param<A>(weight, C);
    const A* a = a_t.data_ptr<A>();
    auto* xp = ptr<scalar_t>(x);
    auto* yp = ptr<scalar_t>(y);
    dispatch_factor(r, [&](auto tag) {
      if (layout == Layout::NCHW) {
        const NchwSplit split(H, W, r);
        const int64_t HW = H * W;
        for_each_nchw_task(N, C, split, H, [&](int64_t, int64_t plane, int64_t h0, int64_t h1) {
          const int64_t n = plane / C, c = plane % C;
          fwd_nchw(tag, yp + plane * HW * r * r, xp + (n * Cin + c * r * r) * HW, h0, h1, HW, W,
                   r, a[c]);
        });
      } else {
        for_each_pixel_chunk(N * H * W, Cin, [&](int64_t, int64_t p0, int64_t np) {
          fwd_nhwc(tag, yp, xp, p0, np, W, C, r, a);
        });
      }
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> pixel_shuffle_prelu_backward_cpu(const at::Tensor& grad_in,
                                                                    const at::Tensor& x_in,
                                                                    const at::Tensor& weight,
                                                                    int64_t r) {
  check_args(x_in, weight, r, kBwd);
  const int64_t N = x_in.size(0), Cin = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const int64_t C = Cin / (r * r);
  check_pixel_shuffle_prelu_grad(grad_in, x_in, r, c10::DeviceType::CPU, kBwd);
  const Layout layout = layout_of(x_in);
  const at::Tensor x = in_layout(x_in, layout);
  const at::Tensor grad = in_layout(grad_in, layout);
  at::Tensor dx = at::empty_like(x, memory_format(layout));
  at::Tensor dweight;
  FASTSR_DISPATCH_FLOATING(x.scalar_type(), kBwd, [&] {
    using A = typename acc<scalar_t>::type;
    const at::Tensor a_t = channel_param<A>(weight, C);
    const A* a = a_t.data_ptr<A>();
    auto* xp = ptr<scalar_t>(x);
    auto* gp = ptr<scalar_t>(grad);
    auto* dp = ptr<scalar_t>(dx);
    std::vector<double> sum(C, 0.0);
    if (x.numel() > 0) {
      dispatch_factor(r, [&](auto tag) {
        if (layout == Layout::NCHW) {
          const NchwSplit split(H, W, r);
          const int64_t HW = H * W;
          std::vector<A> partial(N * C * split.blocks);
          for_each_nchw_task(N, C, split, H, [&](int64_t t, int64_t plane, int64_t h0, int64_t h1) {
            const int64_t n = plane / C, c = plane % C;
            const int64_t in_off = (n * Cin + c * r * r) * HW;
            partial[t] = bwd_nchw(tag, dp + in_off, gp + plane * HW * r * r, xp + in_off, h0, h1,
                                  HW, W, r, a[c]);
          });
          // partial is [n][c][block]: add in that fixed order.
          for (int64_t n = 0; n < N; ++n)
            for (int64_t c = 0; c < C; ++c)
              for (int64_t b = 0; b < split.blocks; ++b)
                sum[c] += partial[(n * C + c) * split.blocks + b];
        } else {
          const int64_t P = N * H * W;
          std::vector<A> partial(pixel_chunks(P) * C);
          for_each_pixel_chunk(P, Cin, [&](int64_t t, int64_t p0, int64_t np) {
            bwd_nhwc(tag, dp, gp, xp, p0, np, W, C, r, a, &partial[t * C]);
          });
          const int64_t tasks = pixel_chunks(P);
          for (int64_t t = 0; t < tasks; ++t)
            for (int64_t c = 0; c < C; ++c) sum[c] += partial[t * C + c];
        }
      });
    }
    dweight = at::empty({C}, at::TensorOptions().dtype(at::kDouble));
    std::copy(sum.begin(), sum.end(), dweight.data_ptr<double>());
  });
  // A shared PReLU weight (num_parameters=1) gets the sum over channels, still in double.
  if (weight.size(0) == 1) dweight = dweight.sum().reshape({1});
  return {dx, dweight.to(weight.scalar_type())};
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CPU, m) {
  m.impl("pixel_shuffle_prelu", &fastsr::pixel_shuffle_prelu_cpu);
  m.impl("pixel_shuffle_prelu_backward", &fastsr::pixel_shuffle_prelu_backward_cpu);
}
