// SSIM with a separable Gaussian window, 'valid' filtering (Wang et al. 2004, eq. 13; the
// pytorch-msssim / BasicSR convention). See fastsr/ops/ssim.py for the formulas.
//
// Forward, per (image, channel, tile of kRowTile output rows): every input row of the
// tile (plus its win - 1 halo rows) is filtered horizontally into a ring of `win` rows
// holding the four moments (x, y, x^2 + y^2, xy); each time the ring is full one output
// row is filtered vertically out of it and the SSIM map, its row sum and -- when a
// gradient is needed -- the backward maps are computed in registers. Nothing of image
// size is materialised except the maps the backward needs.
//
// Backward maps (per (n, c), K planes of Ho x Wo, accumulation dtype):
//   [B, Cxy, A_x if grad_x, A_y if grad_y]
//   B = dS/dsigma_x^2 = dS/dsigma_y^2,  Cxy = dS/dsigma_xy,
//   A_x = dS/dmu_x - 2 mu_x B - mu_y Cxy,  A_y = dS/dmu_y - 2 mu_y B - mu_x Cxy
// Backward, per (image, channel, tile of output rows of the image): each map row is
// filtered horizontally with zero padding ('full', the transpose of 'valid'; the window
// is symmetric) into a ring, then vertically, and combined in registers:
//   dx = s_n (G*A_x + 2 x G*B + y G*Cxy),  dy = s_n (G*A_y + 2 y G*B + x G*Cxy),
//   s_n = grad[n] / (C Ho Wo).
//
// The inner loops use GCC vector extensions of 64 bytes (16 floats / 8 doubles): one
// AVX-512 register, two AVX2 or four SSE registers in the baseline clone. Rows are copied
// into zero-padded float buffers first (this also widens bf16 and reads any strides, so
// contiguous, channels_last and strided inputs need no copy), so the vector loops have no
// tails. Work split and summation order depend only on the shape: deterministic.
#include "cpu/common.h"

#include <vector>

#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastsr {
namespace {

constexpr const char* kFwd = "fastsr::ssim";
constexpr const char* kBwd = "fastsr::ssim_backward";
constexpr int64_t kRowTile = 64;  // output rows per task (fixed: the result must not depend on threads)

template <typename A> struct vec;
template <> struct vec<float> {
  typedef float type __attribute__((vector_size(64)));
  static constexpr int64_t L = 16;
};
template <> struct vec<double> {
  typedef double type __attribute__((vector_size(64)));
  static constexpr int64_t L = 8;
};

template <typename V, typename A>
FASTSR_INLINE V vload(const A* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename A>
FASTSR_INLINE void vstore(A* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

inline int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Row pitch (elements) of a ring buffer holding rows of n elements, vectors of L elements:
// n rounded up to whole vectors, then to an odd number of 64-byte cache lines. The vertical
// pass reads `win` rows of each moment at once; with a pitch of 2^k lines (W = 512 gives
// 2048 bytes) those 5 x 11 lines fall into two of the 64 sets of an 8-way L1 and evict each
// other on every vector (measured: 3x slower per pixel at 512 x 512 than at 96 x 96). An
// odd pitch maps any 64 consecutive rows to 64 distinct sets.
template <typename A>
inline int64_t ring_pitch(int64_t n, int64_t L) {
  const int64_t per_line = 64 / static_cast<int64_t>(sizeof(A));
  int64_t p = round_up(round_up(n, L), per_line);
  if ((p / per_line) % 2 == 0) p += per_line;
  return p;
}

// Row n elements apart by `stride` -> dense acc buffer.
template <typename T, typename A>
FASTSR_INLINE void load_row(A* __restrict__ dst, const T* __restrict__ src, int64_t n, int64_t stride) {
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) dst[j] = load(src, j);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = load(src, j * stride);
  }
}
template <typename T, typename A>
FASTSR_INLINE void store_row(T* __restrict__ dst, const A* __restrict__ src, int64_t n, int64_t stride) {
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) store(dst, j, src[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) store(dst, j * stride, src[j]);
  }
}

// One (n, c) plane as the kernels see it: base pointer and strides of H and W.
template <typename T>
struct PlaneRef {
  const T* p;
  int64_t sH, sW;
};

// ---- forward ----------------------------------------------------------------------------
// SSIM needs sigma_x^2 and sigma_y^2 only through their sum (B2 = sigma_x^2 + sigma_y^2 + C2,
// and dS/dsigma_x^2 = dS/dsigma_y^2), so four moments are filtered, not five:
//   mu_x = G*x, mu_y = G*y, E_q = G*(x^2 + y^2), E_p = G*(x y),
//   sigma_x^2 + sigma_y^2 = E_q - mu_x^2 - mu_y^2,  sigma_xy = E_p - mu_x mu_y.
// The products are formed once per input row, so each tap of the horizontal pass is four
// FMAs (it was two multiplies and five FMAs with the products formed per tap).
constexpr int64_t kMoments = 4;

// Scratch of one task: ring (4 * win * RP, RP = ring_pitch(Wo)), x/y/q/p rows (Wp each).
template <typename A>
struct FwdScratch {
  std::vector<A> ring, xr, yr, qr, pr;
  FwdScratch(int64_t win, int64_t RP, int64_t Wp)
      : ring(kMoments * win * RP), xr(Wp, A(0)), yr(Wp, A(0)), qr(Wp, A(0)), pr(Wp, A(0)) {}
};

template <typename T, typename A>
FASTSR_INLINE double fwd_tile_impl(PlaneRef<T> X, PlaneRef<T> Y, int64_t W, int64_t win,
                                   const A* __restrict__ g, A c1, A c2, int64_t i0, int64_t i1,
                                   A* __restrict__ ring, A* __restrict__ xr, A* __restrict__ yr,
                                   A* __restrict__ qr, A* __restrict__ pr,
                                   A* __restrict__ maps, int64_t map_plane, bool gx, bool gy) {
  using V = typename vec<A>::type;
  constexpr int64_t L = vec<A>::L;
  const int64_t Wo = W - win + 1;
  const int64_t Wop = round_up(Wo, L);
  const int64_t Wr = round_up(W, L);  // row buffers hold >= Wop + win - 1 elements, zero beyond W
  const int64_t RP = ring_pitch<A>(Wo, L);
  const int64_t ringk = win * RP;  // one moment's ring
  double total = 0.0;
  int64_t slots[64];                // win <= 63 is checked by the caller
  for (int64_t r = i0; r < i1 + win - 1; ++r) {
    // horizontal pass of input row r into ring slot r % win
    load_row(xr, X.p + r * X.sH, W, X.sW);
    load_row(yr, Y.p + r * Y.sH, W, Y.sW);
    for (int64_t j = 0; j < Wr; j += L) {
      const V xv = vload<V>(xr + j), yv = vload<V>(yr + j);
      vstore(qr + j, xv * xv + yv * yv);
      vstore(pr + j, xv * yv);
    }
    A* h = ring + (r % win) * RP;
    for (int64_t jb = 0; jb < Wop; jb += L) {
      V s0 = {}, s1 = {}, s2 = {}, s3 = {};
      for (int64_t b = 0; b < win; ++b) {
        const A gb = g[b];
        s0 += gb * vload<V>(xr + jb + b);
        s1 += gb * vload<V>(yr + jb + b);
        s2 += gb * vload<V>(qr + jb + b);
        s3 += gb * vload<V>(pr + jb + b);
      }
      vstore(h + jb, s0);
      vstore(h + ringk + jb, s1);
      vstore(h + 2 * ringk + jb, s2);
      vstore(h + 3 * ringk + jb, s3);
    }
    if (r < i0 + win - 1) continue;
    // vertical pass: output row i uses input rows i .. i + win - 1
    const int64_t i = r - win + 1;
    for (int64_t a = 0; a < win; ++a) slots[a] = ((i + a) % win) * RP;
    V rowsum = {};
    A* mrow = maps ? maps + i * Wo : nullptr;
    for (int64_t jb = 0; jb < Wop; jb += L) {
      V mx = {}, my = {}, eq = {}, ep = {};
      for (int64_t a = 0; a < win; ++a) {
        const A ga = g[a];
        const A* q = ring + slots[a] + jb;
        mx += ga * vload<V>(q);
        my += ga * vload<V>(q + ringk);
        eq += ga * vload<V>(q + 2 * ringk);
        ep += ga * vload<V>(q + 3 * ringk);
      }
      const V mxx = mx * mx, myy = my * my, mxy = mx * my;
      const V a1 = A(2) * mxy + c1, b1 = mxx + myy + c1;
      const V a2 = A(2) * (ep - mxy) + c2, b2 = (eq - mxx - myy) + c2;
      const V inv = A(1) / (b1 * b2);
      const V s = a1 * a2 * inv;
      const int64_t nvalid = std::min<int64_t>(L, Wo - jb);
      if (nvalid == L) {
        rowsum += s;
      } else {
        for (int64_t l = 0; l < nvalid; ++l) rowsum[l] += s[l];
      }
      if (mrow) {
        const V rb1 = b2 * inv;         // 1 / B1
        const V B = -s * (b1 * inv);    // dS/dsigma_x^2 = -S / B2
        const V Cm = A(2) * a1 * inv;   // dS/dsigma_xy = 2 A1 / (B1 B2)
        const V a2inv = A(2) * a2 * inv;
        V out[4];
        int64_t k = 0;
        out[k++] = B;
        out[k++] = Cm;
        // dS/dmu_x = 2 mu_y A2 / (B1 B2) - 2 mu_x S / B1
        if (gx) out[k++] = my * a2inv - A(2) * mx * (s * rb1 + B) - my * Cm;
        if (gy) out[k++] = mx * a2inv - A(2) * my * (s * rb1 + B) - mx * Cm;
        for (int64_t kk = 0; kk < k; ++kk) {
          A* dst = mrow + kk * map_plane + jb;
          if (nvalid == L) {
            vstore(dst, out[kk]);
          } else {
            for (int64_t l = 0; l < nvalid; ++l) dst[l] = out[kk][l];
          }
        }
      }
    }
    double rs = 0.0;
    for (int64_t l = 0; l < L; ++l) rs += rowsum[l];
    total += rs;
  }
  return total;
}

// ---- backward ---------------------------------------------------------------------------
template <typename A>
struct BwdScratch {
  std::vector<A> ring, mpad, xr, yr, dxr, dyr;
  BwdScratch(int64_t K, int64_t win, int64_t RP, int64_t WP, int64_t MP)
      : ring(K * win * RP), mpad(K * MP, A(0)), xr(WP, A(0)), yr(WP, A(0)), dxr(WP), dyr(WP) {}
};

template <typename T, typename A>
FASTSR_INLINE void bwd_tile_impl(PlaneRef<T> X, PlaneRef<T> Y, T* dx, int64_t dxsH, int64_t dxsW,
                                 T* dy, int64_t dysH, int64_t dysW, int64_t H, int64_t W,
                                 int64_t win, const A* __restrict__ g, const A* __restrict__ maps,
                                 int64_t K, A scale, int64_t p0, int64_t p1, bool gx, bool gy,
                                 int64_t MP, A* __restrict__ ring, A* __restrict__ mpad, A* __restrict__ xr,
                                 A* __restrict__ yr, A* __restrict__ dxr, A* __restrict__ dyr) {
  using V = typename vec<A>::type;
  constexpr int64_t L = vec<A>::L;
  const int64_t Ho = H - win + 1, Wo = W - win + 1;
  const int64_t WP = round_up(W, L);
  const int64_t RP = ring_pitch<A>(W, L);
  const int64_t ringk = win * RP;
  const int64_t kx = 2, ky = gx ? 3 : 2;  // map index of A_x, A_y
  int64_t slots[64];
  for (int64_t q = p0 - win + 1; q < p1; ++q) {
    A* h = ring + (((q % win) + win) % win) * RP;
    if (q < 0 || q >= Ho) {
      for (int64_t k = 0; k < K; ++k) std::memset(h + k * ringk, 0, sizeof(A) * WP);
    } else {
      // 'full' horizontal filtering of map row q: out[j] = sum_b g[b] M[j - b], all maps in
      // one loop (independent FMA chains; one map at a time is FMA-latency bound)
      for (int64_t k = 0; k < K; ++k)  // mpad rows are zero around the copied map row
        std::memcpy(mpad + k * MP + (win - 1), maps + (k * Ho + q) * Wo, sizeof(A) * Wo);
      const A* mB = mpad + (win - 1);
      const A* mC = mB + MP;
      const A* mAx = mB + kx * MP;
      const A* mAy = mB + ky * MP;
      for (int64_t jb = 0; jb < WP; jb += L) {
        V sB = {}, sC = {}, sAx = {}, sAy = {};
        for (int64_t b = 0; b < win; ++b) {
          const A gb = g[b];
          sB += gb * vload<V>(mB + jb - b);
          sC += gb * vload<V>(mC + jb - b);
          if (gx) sAx += gb * vload<V>(mAx + jb - b);
          if (gy) sAy += gb * vload<V>(mAy + jb - b);
        }
        vstore(h + jb, sB);
        vstore(h + ringk + jb, sC);
        if (gx) vstore(h + kx * ringk + jb, sAx);
        if (gy) vstore(h + ky * ringk + jb, sAy);
      }
    }
    if (q < p0) continue;
    // vertical 'full' filtering: image row p = q gets map rows p - a, a = 0 .. win - 1
    const int64_t p = q;
    for (int64_t a = 0; a < win; ++a) slots[a] = ((((p - a) % win) + win) % win) * RP;
    load_row(xr, X.p + p * X.sH, W, X.sW);
    load_row(yr, Y.p + p * Y.sH, W, Y.sW);
    for (int64_t jb = 0; jb < WP; jb += L) {
      V vB = {}, vC = {}, vAx = {}, vAy = {};
      for (int64_t a = 0; a < win; ++a) {
        const A ga = g[a];
        const A* r = ring + slots[a] + jb;
        vB += ga * vload<V>(r);
        vC += ga * vload<V>(r + ringk);
        if (gx) vAx += ga * vload<V>(r + kx * ringk);
        if (gy) vAy += ga * vload<V>(r + ky * ringk);
      }
      const V xv = vload<V>(xr + jb), yv = vload<V>(yr + jb);
      if (gx) vstore(dxr + jb, scale * (vAx + A(2) * xv * vB + yv * vC));
      if (gy) vstore(dyr + jb, scale * (vAy + A(2) * yv * vB + xv * vC));
    }
    if (gx) store_row(dx + p * dxsH, dxr, W, dxsW);
    if (gy) store_row(dy + p * dysH, dyr, W, dysW);
  }
}

// ---- per-ISA entry points -------------------------------------------------------------------
#define FASTSR_DEFINE_FOR(T, A)                                                                     \
  FASTSR_MULTIVERSION double fwd_tile(PlaneRef<T> X, PlaneRef<T> Y, int64_t W, int64_t win,        \
                                      const A* g, A c1, A c2, int64_t i0, int64_t i1, A* ring,      \
                                      A* xr, A* yr, A* qr, A* pr, A* maps, int64_t mp, bool gx,     \
                                      bool gy) {                                                    \
    return fwd_tile_impl(X, Y, W, win, g, c1, c2, i0, i1, ring, xr, yr, qr, pr, maps, mp, gx, gy); \
  }                                                                                                 \
  FASTSR_MULTIVERSION void bwd_tile(PlaneRef<T> X, PlaneRef<T> Y, T* dx, int64_t dxsH,              \
                                    int64_t dxsW, T* dy, int64_t dysH, int64_t dysW, int64_t H,     \
                                    int64_t W, int64_t win, const A* g, const A* maps, int64_t K,   \
                                    A scale, int64_t p0, int64_t p1, bool gx, bool gy, int64_t MP,  \
                                    A* ring, A* mpad, A* xr, A* yr, A* dxr, A* dyr) {               \
    bwd_tile_impl(X, Y, dx, dxsH, dxsW, dy, dysH, dysW, H, W, win, g, maps, K, scale, p0, p1, gx,  \
                  gy, MP, ring, mpad, xr, yr, dxr, dyr);                                            \
  }
FASTSR_DEFINE_FOR(float, float)
FASTSR_DEFINE_FOR(bf16_t, float)
FASTSR_DEFINE_FOR(double, double)
#undef FASTSR_DEFINE_FOR

// ---- checks and shared setup ----------------------------------------------------------------
constexpr int64_t kMaxWindow = 63;

void check_inputs(const at::Tensor& x, const at::Tensor& y, int64_t win, const char* op) {
  check_activation(x, op, "x");
  check_same_as(y, x, op, "y", "x");
  TORCH_CHECK_VALUE(win >= 1 && win % 2 == 1 && win <= kMaxWindow, op,
                    ": window_size must be an odd integer in [1, ", kMaxWindow, "], got ", win);
  TORCH_CHECK_VALUE(x.size(1) >= 1, op, ": x must have at least one channel, got shape ", x.sizes());
  TORCH_CHECK_VALUE(x.size(2) >= win && x.size(3) >= win, op, ": images (", x.size(2), "x",
                    x.size(3), ") must be at least window_size x window_size (", win, "x", win,
                    ") for 'valid' filtering, got x of shape ", x.sizes());
}

void check_positive(double v, const char* op, const char* arg) {
  TORCH_CHECK_VALUE(std::isfinite(v) && v > 0, op, ": ", arg, " must be a finite number > 0, got ", v);
}

template <typename A>
std::vector<A> gaussian(int64_t win, double sigma) {
  std::vector<double> gd(win);
  double sum = 0;
  for (int64_t i = 0; i < win; ++i) {
    const double c = static_cast<double>(i - win / 2);
    gd[i] = std::exp(-(c * c) / (2.0 * sigma * sigma));
    sum += gd[i];
  }
  std::vector<A> g(win);
  for (int64_t i = 0; i < win; ++i) g[i] = static_cast<A>(gd[i] / sum);
  return g;
}

inline at::ScalarType acc_scalar_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline int64_t map_count(bool gx, bool gy) { return (gx || gy) ? 2 + int64_t(gx) + int64_t(gy) : 0; }

// ---- ops -----------------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor> ssim_cpu(const at::Tensor& x, const at::Tensor& y,
                                            double data_range, int64_t win, double sigma, double k1,
                                            double k2, bool grad_x, bool grad_y) {
  check_inputs(x, y, win, kFwd);
  check_positive(data_range, kFwd, "data_range");
  check_positive(sigma, kFwd, "sigma");
  check_positive(k1, kFwd, "k1");
  check_positive(k2, kFwd, "k2");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = H - win + 1, Wo = W - win + 1;
  const int64_t K = map_count(grad_x, grad_y);
  const auto acc_t = acc_scalar_type(x.scalar_type());
  at::Tensor maps = at::empty({N, C, K, Ho, Wo}, x.options().dtype(acc_t));
  const int64_t tiles = (Ho + kRowTile - 1) / kRowTile;
  std::vector<double> partial(N * C * tiles, 0.0);
  FASTSR_DISPATCH_FLOATING(x.scalar_type(), kFwd, [&] {
    using A = typename acc<scalar_t>::type;
    using S = typename storage<scalar_t>::type;
    constexpr int64_t L = vec<A>::L;
    const std::vector<A> g = gaussian<A>(win, sigma);
    const A c1 = static_cast<A>((k1 * data_range) * (k1 * data_range));
    const A c2 = static_cast<A>((k2 * data_range) * (k2 * data_range));
    const S* xp = ptr<scalar_t>(x);
    const S* yp = ptr<scalar_t>(y);
    A* mp = K ? maps.data_ptr<A>() : nullptr;
    const int64_t Wop = round_up(Wo, L);
    const int64_t Wp = std::max(Wop + round_up(win, L), round_up(W, L));
    at::parallel_for(0, N * C * tiles, 1, [&](int64_t begin, int64_t end) {
      FwdScratch<A> s(win, ring_pitch<A>(Wo, L), Wp);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t plane = t / tiles, tile = t % tiles;
        const int64_t n = plane / C, c = plane % C;
        const int64_t i0 = tile * kRowTile, i1 = std::min(Ho, i0 + kRowTile);
        PlaneRef<S> X{xp + n * x.stride(0) + c * x.stride(1), x.stride(2), x.stride(3)};
        PlaneRef<S> Y{yp + n * y.stride(0) + c * y.stride(1), y.stride(2), y.stride(3)};
        partial[t] = fwd_tile(X, Y, W, win, g.data(), c1, c2, i0, i1, s.ring.data(), s.xr.data(),
                              s.yr.data(), s.qr.data(), s.pr.data(), mp ? mp + plane * K * Ho * Wo : nullptr, Ho * Wo,
                              grad_x, grad_y);
      }
    });
  });
  at::Tensor out = at::empty({N}, x.options().dtype(at::kDouble));
  double* o = out.data_ptr<double>();
  const double inv_count = 1.0 / static_cast<double>(C * Ho * Wo);
  for (int64_t n = 0; n < N; ++n) {
    double s = 0.0;
    for (int64_t k = 0; k < C * tiles; ++k) s += partial[n * C * tiles + k];
    o[n] = s * inv_count;
  }
  return {out.to(x.scalar_type()), maps};
}

std::tuple<at::Tensor, at::Tensor> ssim_backward_cpu(const at::Tensor& grad_in, const at::Tensor& x,
                                                     const at::Tensor& y, const at::Tensor& maps_in,
                                                     int64_t win, double sigma, bool grad_x,
                                                     bool grad_y) {
  check_inputs(x, y, win, kBwd);
  check_positive(sigma, kBwd, "sigma");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = H - win + 1, Wo = W - win + 1;
  const int64_t K = map_count(grad_x, grad_y);
  check_cpu(grad_in, kBwd, "grad");
  TORCH_CHECK_VALUE(grad_in.dim() == 1 && grad_in.size(0) == N, kBwd,
                    ": grad must have shape (N,) = (", N, "), got ", grad_in.sizes());
  TORCH_CHECK_TYPE(grad_in.scalar_type() == x.scalar_type(), kBwd, ": grad must have the dtype of x (",
                   x.scalar_type(), "), got ", grad_in.scalar_type());
  check_cpu(maps_in, kBwd, "maps");
  TORCH_CHECK_VALUE(maps_in.dim() == 5 && maps_in.size(0) == N && maps_in.size(1) == C &&
                        maps_in.size(2) == K && maps_in.size(3) == Ho && maps_in.size(4) == Wo,
                    kBwd, ": maps must have shape (", N, ", ", C, ", ", K, ", ", Ho, ", ", Wo,
                    ") (from fastsr::ssim with the same grad_x/grad_y), got ", maps_in.sizes());
  const auto acc_t = acc_scalar_type(x.scalar_type());
  TORCH_CHECK_TYPE(maps_in.scalar_type() == acc_t, kBwd, ": maps must be ", acc_t, ", got ",
                   maps_in.scalar_type());
  const at::MemoryFormat fmt = memory_format(layout_of(x));
  at::Tensor dx = grad_x ? at::empty_like(x, fmt) : at::empty({0}, x.options());
  at::Tensor dy = grad_y ? at::empty_like(y, memory_format(layout_of(y))) : at::empty({0}, y.options());
  if (K == 0 || N == 0) return {dx, dy};
  const at::Tensor maps = maps_in.contiguous();
  const at::Tensor gd = grad_in.to(at::kDouble).contiguous();
  const int64_t tiles = (H + kRowTile - 1) / kRowTile;
  FASTSR_DISPATCH_FLOATING(x.scalar_type(), kBwd, [&] {
    using A = typename acc<scalar_t>::type;
    using S = typename storage<scalar_t>::type;
    constexpr int64_t L = vec<A>::L;
    const std::vector<A> g = gaussian<A>(win, sigma);
    const S* xp = ptr<scalar_t>(x);
    const S* yp = ptr<scalar_t>(y);
    S* dxp = grad_x ? ptr<scalar_t>(dx) : nullptr;
    S* dyp = grad_y ? ptr<scalar_t>(dy) : nullptr;
    const A* mp = maps.data_ptr<A>();
    const double* gp = gd.data_ptr<double>();
    const double inv_count = 1.0 / static_cast<double>(C * Ho * Wo);
    const int64_t WP = round_up(W, L);
    const int64_t MP = WP + round_up(win, L) + L;
    at::parallel_for(0, N * C * tiles, 1, [&](int64_t begin, int64_t end) {
      BwdScratch<A> s(K, win, ring_pitch<A>(W, L), WP, MP);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t plane = t / tiles, tile = t % tiles;
        const int64_t n = plane / C, c = plane % C;
        const int64_t p0 = tile * kRowTile, p1 = std::min(H, p0 + kRowTile);
        PlaneRef<S> X{xp + n * x.stride(0) + c * x.stride(1), x.stride(2), x.stride(3)};
        PlaneRef<S> Y{yp + n * y.stride(0) + c * y.stride(1), y.stride(2), y.stride(3)};
        S* dxt = dxp ? dxp + n * dx.stride(0) + c * dx.stride(1) : nullptr;
        S* dyt = dyp ? dyp + n * dy.stride(0) + c * dy.stride(1) : nullptr;
        bwd_tile(X, Y, dxt, grad_x ? dx.stride(2) : 0, grad_x ? dx.stride(3) : 0, dyt,
                 grad_y ? dy.stride(2) : 0, grad_y ? dy.stride(3) : 0, H, W, win, g.data(),
                 mp + plane * K * Ho * Wo, K, static_cast<A>(gp[n] * inv_count), p0, p1, grad_x,
                 grad_y, MP, s.ring.data(), s.mpad.data(), s.xr.data(), s.yr.data(), s.dxr.data(),
                 s.dyr.data());
      }
    });
  });
  return {dx, dy};
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CPU, m) {
  m.impl("ssim", &fastsr::ssim_cpu);
  m.impl("ssim_backward", &fastsr::ssim_backward_cpu);
}
