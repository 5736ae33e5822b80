// SSIM with a separable Gaussian window, 'valid' filtering (Wang et al. 2004, eq. 13; the
// pytorch-msssim / BasicSR convention), and its gradient, computed together. See
// fastsr/ops/ssim.py for the formulas.
//
// Moments. SSIM needs sigma_x^2 and sigma_y^2 only through their sum (B2 = sigma_x^2 +
// sigma_y^2 + C2, and dS/dsigma_x^2 = dS/dsigma_y^2), so four moments are filtered:
//   mu_x = G*x, mu_y = G*y, E_q = G*(x^2 + y^2), E_p = G*(x y),
//   sigma_x^2 + sigma_y^2 = E_q - mu_x^2 - mu_y^2,  sigma_xy = E_p - mu_x mu_y.
// Each input row (products formed once per row) is filtered horizontally into a ring of
// `win` rows per moment; each time the ring holds rows i .. i + win - 1, map row i is
// filtered vertically out of it and the SSIM map row and its sum are computed in registers.
//
// Gradient (when asked for). The per-image SSIM is a mean, so d value[n] / d x[n] does not
// depend on the incoming gradient but for one scalar factor: the forward computes it whole,
// and the backward is a scale (fastsr/ops/ssim.py), as for the fused L1 loss. With the
// per-position derivative maps (never stored: one row of them lives in registers, then in
// a zero-padded row buffer)
//   B = dS/dsigma_x^2 = dS/dsigma_y^2,  Cxy = dS/dsigma_xy,
//   A_x = dS/dmu_x - 2 mu_x B - mu_y Cxy,  A_y = dS/dmu_y - 2 mu_y B - mu_x Cxy,
// each map row is filtered horizontally with zero padding ('full', the transpose of
// 'valid'; the window is symmetric) into a second ring, and image row p is filtered
// vertically out of map rows p - win + 1 .. p:
//   dx = s (G*A_x + 2 x G*B + y G*Cxy),  dy = s (G*A_y + 2 y G*B + x G*Cxy),  s = 1 / (C Ho Wo).
// So a training step reads x and y once and writes dx (and dy) once; the earlier design
// wrote the K maps (12-16 bytes per pixel) in the forward and read them back in a separate
// backward, and on this CPU that traffic cost as much as the arithmetic at 1x3x512x512.
//
// Work split: per (image, channel) plane, tiles of rows (map rows without a gradient, image
// rows with one; a gradient tile recomputes the win - 1 map rows above it). Every map row's
// sum is kept in double and the per-image value is summed in a fixed order, and every
// gradient element is computed by the same arithmetic whatever the tiling, so the tiling
// may follow the thread count (balanced tasks, few halo rows) and the results are still
// bitwise identical for any number of threads.
//
// The inner loops use GCC vector extensions of 64 bytes (16 floats / 8 doubles): one
// AVX-512 register, two AVX2 or four SSE registers in the baseline clone. Rows are copied
// into zero-padded buffers first (this also widens bf16 and reads any strides, so
// contiguous, channels_last and strided inputs need no copy), so the vector loops have no
// tails. Ring rows are padded to an odd number of cache lines: a pitch of 2^k lines (2048
// bytes at W = 512) put all 44 rows a vertical step reads into two sets of the L1 and made
// 512 px wide images 3x slower per pixel than 96 px ones.
#include "cpu/common.h"
#include "size_checks.h"

#include <cstdlib>
#include <numeric>
#include <vector>

#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastsr {
namespace {

constexpr const char* kOp = "fastsr::ssim";
constexpr int64_t kMoments = 4;
constexpr int64_t kMaxWindow = 63;  // ring slots are indexed through a fixed array

// GCC generic vectors of B bytes. The tile loops are compiled once per ISA with the width
// of its registers (64 bytes for AVX-512, 32 for AVX2, 16 otherwise): a generic vector wider
// than the hardware's is split through the stack, which made the AVX2 build run the 64-byte
// code ~10x slower than the AVX-512 build. Row buffers are padded for the widest (kVecBytes),
// a multiple of every narrower width, so one Dims serves every build.
constexpr int kVecBytes = 64;
template <typename A, int B = kVecBytes>
struct vec {
  typedef A type __attribute__((vector_size(B)));
  static constexpr int64_t L = B / static_cast<int64_t>(sizeof(A));
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
inline int64_t pos_mod(int64_t a, int64_t m) { return ((a % m) + m) % m; }

// Row pitch (elements) of a ring holding rows of n elements: whole vectors, then an odd
// number of 64-byte lines, so that any 64 consecutive rows fall into distinct L1 sets.
template <typename A>
inline int64_t ring_pitch(int64_t n) {
  constexpr int64_t per_line = 64 / static_cast<int64_t>(sizeof(A));
  int64_t p = round_up(round_up(n, vec<A>::L), per_line);
  if ((p / per_line) % 2 == 0) p += per_line;
  return p;
}

// Row n elements apart by `stride` -> dense acc buffer, and back.
template <typename T, typename A>
FASTSR_INLINE void load_row(A* __restrict__ dst, const T* __restrict__ src, int64_t n, int64_t stride) {
  if (stride == 1) {
    for (int64_t j = 0; j < n; ++j) dst[j] = load(src, j);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = load(src, j * stride);
  }
}
template <typename A>
FASTSR_INLINE void store_row(A* __restrict__ dst, const A* __restrict__ src, int64_t n, int64_t stride) {
  if (stride == 1) {
    std::memcpy(dst, src, sizeof(A) * n);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j * stride] = src[j];
  }
}

// One (n, c) plane: base pointer and strides of H and W.
template <typename P>
struct PlaneRef {
  P* p;
  int64_t sH, sW;
};

// Everything a tile needs about its plane.
template <typename T, typename A>
struct Plane {
  PlaneRef<const T> X, Y;
  PlaneRef<A> DX, DY;  // gradient planes (accumulation dtype); p == nullptr when not asked
  int64_t H, W, win;
  const A* g;
  A c1, c2, scale;     // scale = 1 / (C Ho Wo)
  double* rowsum;      // (Ho,) sum of each SSIM map row of this plane
};

// Sizes of the row buffers, the same for every tile of a call.
struct Dims {
  int64_t Wo, Wop, Wr, Wp, RPo, WP, RPi, MP, K;
  template <typename A>
  static Dims make(int64_t W, int64_t win, int64_t K) {
    constexpr int64_t L = vec<A>::L;
    Dims d;
    d.Wo = W - win + 1;
    d.Wop = round_up(d.Wo, L);                                 // map row, whole vectors
    d.Wr = round_up(W, L);                                     // input row, whole vectors
    d.Wp = std::max(d.Wop + round_up(win, L), d.Wr);           // input row + filter overrun
    d.RPo = ring_pitch<A>(d.Wo);                               // moment ring pitch
    d.WP = d.Wr;                                               // gradient row
    d.RPi = ring_pitch<A>(W);                                  // gradient ring pitch
    d.MP = d.WP + round_up(win, L) + L;                        // zero-padded map row
    d.K = K;
    return d;
  }
};

// Per-thread scratch; buffers that are read beyond the data start (and stay) zero.
template <typename A>
struct Scratch {
  std::vector<A> mring, xr, yr, qr, pr;  // moments
  std::vector<A> gring, mpad, bx, by, dr;  // gradient (two rows of mpad, bx, by, dr)
  Scratch(const Dims& d, int64_t win)
      : mring(kMoments * (win + 1) * d.RPo), xr(d.Wp, A(0)), yr(d.Wp, A(0)), qr(d.Wp, A(0)), pr(d.Wp, A(0)),
        gring(d.K * (win + 1) * d.RPi), mpad(2 * d.K * d.MP, A(0)), bx(d.K ? 2 * d.WP : 0, A(0)),
        by(d.K ? 2 * d.WP : 0, A(0)), dr(d.K ? 2 * d.WP : 0) {}
};

// Input row r -> products -> horizontal pass into moment ring slot r % (win + 1).
template <int B, typename T, typename A>
FASTSR_INLINE void moments_row(const Plane<T, A>& P, const Dims& d, Scratch<A>& s, int64_t r) {
  using V = typename vec<A, B>::type;
  constexpr int64_t L = vec<A, B>::L;
  const int64_t win = P.win, ringk = (win + 1) * d.RPo;
  A* __restrict__ xr = s.xr.data();
  A* __restrict__ yr = s.yr.data();
  A* __restrict__ qr = s.qr.data();
  A* __restrict__ pr = s.pr.data();
  const A* __restrict__ g = P.g;
  load_row(xr, P.X.p + r * P.X.sH, P.W, P.X.sW);
  load_row(yr, P.Y.p + r * P.Y.sH, P.W, P.Y.sW);
  for (int64_t j = 0; j < d.Wr; j += L) {
    const V xv = vload<V>(xr + j), yv = vload<V>(yr + j);
    vstore(qr + j, xv * xv + yv * yv);
    vstore(pr + j, xv * yv);
  }
  A* __restrict__ h = s.mring.data() + (r % (win + 1)) * d.RPo;
  for (int64_t jb = 0; jb < d.Wop; jb += L) {
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
}

// SSIM of one vector of map positions from its four moments: added to `rowsum` (valid
// lanes only) and, when `mdst` is given, the derivative maps [B, Cxy, A_x if gx, A_y if gy]
// stored at mdst + k * MP + jb (valid lanes only, so the zero padding around them stays zero).
template <int B, typename A>
FASTSR_INLINE void ssim_vec(typename vec<A, B>::type mx, typename vec<A, B>::type my, typename vec<A, B>::type eq,
                            typename vec<A, B>::type ep, A c1, A c2, int64_t nvalid,
                            typename vec<A, B>::type& rowsum, A* __restrict__ mdst, int64_t MP, bool gx,
                            bool gy) {
  using V = typename vec<A, B>::type;
  constexpr int64_t L = vec<A, B>::L;
  const V mxx = mx * mx, myy = my * my, mxy = mx * my;
  const V a1 = A(2) * mxy + c1, b1 = mxx + myy + c1;
  const V a2 = A(2) * (ep - mxy) + c2, b2 = (eq - mxx - myy) + c2;
  const V inv = A(1) / (b1 * b2);
  const V sv = a1 * a2 * inv;
  if (nvalid == L) {
    rowsum += sv;
  } else {
    for (int64_t l = 0; l < nvalid; ++l) rowsum[l] += sv[l];
  }
  if (mdst) {
    const V rb1 = b2 * inv;          // 1 / B1
    const V Bm = -sv * (b1 * inv);   // dS/dsigma_x^2 = -S / B2
    const V Cm = A(2) * a1 * inv;    // dS/dsigma_xy = 2 A1 / (B1 B2)
    const V a2inv = A(2) * a2 * inv;
    V out[4];
    int64_t k = 0;
    out[k++] = Bm;
    out[k++] = Cm;
    // dS/dmu_x = 2 mu_y A2 / (B1 B2) - 2 mu_x S / B1
    if (gx) out[k++] = my * a2inv - A(2) * mx * (sv * rb1 + Bm) - my * Cm;
    if (gy) out[k++] = mx * a2inv - A(2) * my * (sv * rb1 + Bm) - mx * Cm;
    for (int64_t kk = 0; kk < k; ++kk) {
      A* dst = mdst + kk * MP;
      if (nvalid == L) {
        vstore(dst, out[kk]);
      } else {
        for (int64_t l = 0; l < nvalid; ++l) dst[l] = out[kk][l];
      }
    }
  }
}

// Map row i (ring holds input rows i .. i + win - 1): the SSIM row sum, and -- when
// `mdst` is given -- the derivative maps [B, Cxy, A_x if gx, A_y if gy] at mdst + k * MP
// (valid positions only, so the zero padding around them stays zero).
template <int B, typename T, typename A>
FASTSR_INLINE double ssim_row(const Plane<T, A>& P, const Dims& d, Scratch<A>& s, int64_t i,
                              A* __restrict__ mdst, bool gx, bool gy) {
  using V = typename vec<A, B>::type;
  constexpr int64_t L = vec<A, B>::L;
  const int64_t win = P.win, R = win + 1, ringk = R * d.RPo, Wo = d.Wo;
  const A* __restrict__ g = P.g;
  const A* __restrict__ ring = s.mring.data();
  const A c1 = P.c1, c2 = P.c2;
  int64_t slots[kMaxWindow];
  for (int64_t a = 0, sl = i % R; a < win; ++a, sl = sl + 1 == R ? 0 : sl + 1) slots[a] = sl * d.RPo;
  V rowsum = {};
  for (int64_t jb = 0; jb < d.Wop; jb += L) {
    V mx = {}, my = {}, eq = {}, ep = {};
    for (int64_t a = 0; a < win; ++a) {
      const A ga = g[a];
      const A* q = ring + slots[a] + jb;
      mx += ga * vload<V>(q);
      my += ga * vload<V>(q + ringk);
      eq += ga * vload<V>(q + 2 * ringk);
      ep += ga * vload<V>(q + 3 * ringk);
    }
    ssim_vec<B, A>(mx, my, eq, ep, c1, c2, std::min<int64_t>(L, Wo - jb), rowsum, mdst ? mdst + jb : nullptr,
                d.MP, gx, gy);
  }
  double rs = 0.0;
  for (int64_t l = 0; l < L; ++l) rs += rowsum[l];
  return rs;
}

// Map rows i and i + 1 together (ring holds input rows i .. i + win): each ring row is
// loaded once for both (win + 1 loads per moment instead of 2 win; the vertical pass is
// bound by loads, not FMAs, on this CPU). Row sums go to rs[0], rs[1]. (Kept apart from
// ssim_row: a single template over the row count, as grad_rows is, measured 7-14 % slower
// here -- the accumulator arrays are not kept in registers as well as named variables.)
template <int B, typename T, typename A>
FASTSR_INLINE void ssim_row2(const Plane<T, A>& P, const Dims& d, Scratch<A>& s, int64_t i,
                             A* __restrict__ mdst0, A* __restrict__ mdst1, bool gx, bool gy, double* rs) {
  using V = typename vec<A, B>::type;
  constexpr int64_t L = vec<A, B>::L;
  const int64_t win = P.win, R = win + 1, ringk = R * d.RPo, Wo = d.Wo;
  const A* __restrict__ g = P.g;
  const A* __restrict__ ring = s.mring.data();
  int64_t slots[kMaxWindow + 1];
  for (int64_t a = 0, sl = i % R; a < R; ++a, sl = sl + 1 == R ? 0 : sl + 1) slots[a] = sl * d.RPo;
  V sum0 = {}, sum1 = {};
  for (int64_t jb = 0; jb < d.Wop; jb += L) {
    V x0, y0, q0, p0, x1 = {}, y1 = {}, q1 = {}, p1 = {};
    {
      const A* q = ring + slots[0] + jb;
      const A ga = g[0];
      x0 = ga * vload<V>(q), y0 = ga * vload<V>(q + ringk);
      q0 = ga * vload<V>(q + 2 * ringk), p0 = ga * vload<V>(q + 3 * ringk);
    }
    for (int64_t a = 1; a < win; ++a) {
      const A* q = ring + slots[a] + jb;
      const A ga = g[a], gb = g[a - 1];
      const V v0 = vload<V>(q), v1 = vload<V>(q + ringk), v2 = vload<V>(q + 2 * ringk),
              v3 = vload<V>(q + 3 * ringk);
      x0 += ga * v0, y0 += ga * v1, q0 += ga * v2, p0 += ga * v3;
      x1 += gb * v0, y1 += gb * v1, q1 += gb * v2, p1 += gb * v3;
    }
    {
      const A* q = ring + slots[win] + jb;
      const A gb = g[win - 1];
      x1 += gb * vload<V>(q), y1 += gb * vload<V>(q + ringk);
      q1 += gb * vload<V>(q + 2 * ringk), p1 += gb * vload<V>(q + 3 * ringk);
    }
    const int64_t nvalid = std::min<int64_t>(L, Wo - jb);
    ssim_vec<B, A>(x0, y0, q0, p0, P.c1, P.c2, nvalid, sum0, mdst0 ? mdst0 + jb : nullptr, d.MP, gx, gy);
    ssim_vec<B, A>(x1, y1, q1, p1, P.c1, P.c2, nvalid, sum1, mdst1 ? mdst1 + jb : nullptr, d.MP, gx, gy);
  }
  rs[0] = rs[1] = 0.0;
  for (int64_t l = 0; l < L; ++l) rs[0] += sum0[l], rs[1] += sum1[l];
}

// 'full' horizontal filtering of map row q (held in mpad row pair `half`) into gradient
// ring slot q % (win + 1): out[j] = sum_b g[b] M[j - b], all maps in one loop.
template <int B, typename T, typename A>
FASTSR_INLINE void maps_row(const Plane<T, A>& P, const Dims& d, Scratch<A>& s, int64_t q, int64_t half,
                            bool gx, bool gy) {
  using V = typename vec<A, B>::type;
  constexpr int64_t L = vec<A, B>::L;
  const int64_t win = P.win, R = win + 1, ringk = R * d.RPi;
  const int64_t kx = 2, ky = gx ? 3 : 2;  // map index of A_x, A_y
  const A* __restrict__ g = P.g;
  const A* mB = s.mpad.data() + half * d.K * d.MP + (win - 1);
  const A* mC = mB + d.MP;
  const A* mAx = mB + kx * d.MP;
  const A* mAy = mB + ky * d.MP;
  A* __restrict__ h = s.gring.data() + pos_mod(q, R) * d.RPi;
  for (int64_t jb = 0; jb < d.WP; jb += L) {
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

// Image rows p0 .. p0 + NR - 1 (NR = 1 or 2) of the gradient from gradient ring rows
// p - win + 1 .. p ('full' vertical filtering); two rows share their win - 1 common ring
// rows' loads, as in ssim_row2.
template <int B, int NR, typename T, typename A>
FASTSR_INLINE void grad_rows(const Plane<T, A>& P, const Dims& d, Scratch<A>& s, int64_t p0, bool gx,
                             bool gy) {
  using V = typename vec<A, B>::type;
  constexpr int64_t L = vec<A, B>::L;
  const int64_t win = P.win, R = win + 1, ringk = R * d.RPi, W = P.W, WP = d.WP;
  const int64_t kx = 2, ky = gx ? 3 : 2;
  const A* __restrict__ g = P.g;
  const A* __restrict__ ring = s.gring.data();
  A* __restrict__ bx = s.bx.data();
  A* __restrict__ by = s.by.data();
  A* __restrict__ dr = s.dr.data();
  const A scale = P.scale;
  // ring rows p0 + NR - 1 - a, a = 0 .. win + NR - 2; image row p0 + r uses tap a - (NR - 1 - r)
  int64_t slots[kMaxWindow + 1];
  for (int64_t a = 0, sl = pos_mod(p0 + NR - 1, R); a < win + NR - 1; ++a, sl = sl == 0 ? R - 1 : sl - 1)
    slots[a] = sl * d.RPi;
  for (int64_t r = 0; r < NR; ++r) {
    load_row(bx + r * WP, P.X.p + (p0 + r) * P.X.sH, W, P.X.sW);
    load_row(by + r * WP, P.Y.p + (p0 + r) * P.Y.sH, W, P.Y.sW);
  }
  for (int pass = 0; pass < 2; ++pass) {  // dx, then dy
    if (!(pass == 0 ? gx : gy)) continue;
    const int64_t kA = pass == 0 ? kx : ky;
    const A* __restrict__ own = pass == 0 ? bx : by;
    const A* __restrict__ other = pass == 0 ? by : bx;
    for (int64_t jb = 0; jb < WP; jb += L) {
      V vB[NR] = {}, vC[NR] = {}, vA[NR] = {};
      for (int64_t a = 0; a < win + NR - 1; ++a) {
        const A* q = ring + slots[a] + jb;
        const V b = vload<V>(q), c = vload<V>(q + ringk), e = vload<V>(q + kA * ringk);
        for (int64_t r = 0; r < NR; ++r) {  // (unrolled; the tap test is uniform over jb)
          const int64_t tap = a - (NR - 1 - r);
          if (tap < 0 || tap >= win) continue;
          const A gt = g[tap];
          vB[r] += gt * b, vC[r] += gt * c, vA[r] += gt * e;
        }
      }
      for (int64_t r = 0; r < NR; ++r) {
        const V ov = vload<V>(own + r * WP + jb), tv = vload<V>(other + r * WP + jb);
        vstore(dr + r * WP + jb, scale * (vA[r] + A(2) * ov * vB[r] + tv * vC[r]));
      }
    }
    const PlaneRef<A>& D = pass == 0 ? P.DX : P.DY;
    for (int64_t r = 0; r < NR; ++r) store_row(D.p + (p0 + r) * D.sH, dr + r * WP, W, D.sW);
  }
}

// SSIM map rows [i0, i1): row sums only.
template <int B, typename T, typename A>
FASTSR_INLINE void value_tile_impl(const Plane<T, A>& P, const Dims& d, Scratch<A>& s, int64_t i0,
                                   int64_t i1) {
  int64_t next_in = i0;  // next input row for the moment ring
  for (int64_t i = i0; i < i1;) {
    const bool two = i + 1 < i1;
    for (; next_in < i + P.win + int64_t(two); ++next_in) moments_row<B>(P, d, s, next_in);
    if (two) {
      ssim_row2<B>(P, d, s, i, static_cast<A*>(nullptr), static_cast<A*>(nullptr), false, false, P.rowsum + i);
      i += 2;
    } else {
      P.rowsum[i] = ssim_row<B>(P, d, s, i, static_cast<A*>(nullptr), false, false);
      i += 1;
    }
  }
}

// Image rows [p0, p1) of the gradient, and the row sums of the map rows in [p0, p1).
// Rows go in pairs (map rows q, q + 1, then image rows q, q + 1) where both exist.
template <int B, typename T, typename A>
FASTSR_INLINE void grad_tile_impl(const Plane<T, A>& P, const Dims& d, Scratch<A>& s, int64_t p0,
                                  int64_t p1) {
  const int64_t win = P.win, R = win + 1, Ho = P.H - win + 1;
  const bool gx = P.DX.p != nullptr, gy = P.DY.p != nullptr;
  A* mdst0 = s.mpad.data() + (win - 1);
  A* mdst1 = mdst0 + d.K * d.MP;
  int64_t next_in = std::max<int64_t>(0, p0 - win + 1);  // next input row for the moment ring
  auto is_map_row = [&](int64_t q) { return q >= 0 && q < Ho; };
  for (int64_t q = p0 - win + 1; q < p1;) {
    const bool two = q + 1 < p1;
    // map rows q (and q + 1) -> horizontal 'full' filtering into the gradient ring
    if (two && is_map_row(q) && is_map_row(q + 1)) {
      for (; next_in < q + win + 1; ++next_in) moments_row<B>(P, d, s, next_in);
      double rs[2];
      ssim_row2<B>(P, d, s, q, mdst0, mdst1, gx, gy, rs);
      if (q >= p0) P.rowsum[q] = rs[0];  // rows above p0 belong to the previous tile
      if (q + 1 >= p0) P.rowsum[q + 1] = rs[1];
      maps_row<B>(P, d, s, q, 0, gx, gy);
      maps_row<B>(P, d, s, q + 1, 1, gx, gy);
    } else {
      for (int64_t u = q; u < q + 1 + int64_t(two); ++u) {
        if (is_map_row(u)) {
          for (; next_in < u + win; ++next_in) moments_row<B>(P, d, s, next_in);
          const double rs = ssim_row<B>(P, d, s, u, mdst0, gx, gy);
          if (u >= p0) P.rowsum[u] = rs;
          maps_row<B>(P, d, s, u, 0, gx, gy);
        } else {
          A* h = s.gring.data() + pos_mod(u, R) * d.RPi;
          for (int64_t k = 0; k < d.K; ++k) std::memset(h + k * R * d.RPi, 0, sizeof(A) * d.WP);
        }
      }
    }
    // image rows q (and q + 1)
    if (two && q >= p0) {
      grad_rows<B, 2>(P, d, s, q, gx, gy);
    } else {
      if (q >= p0) grad_rows<B, 1>(P, d, s, q, gx, gy);
      if (two && q + 1 >= p0) grad_rows<B, 1>(P, d, s, q + 1, gx, gy);
    }
    q += two ? 2 : 1;
  }
}

// ---- per-ISA entry points -------------------------------------------------------------------
// Each ISA build gets its own vector width (see vec), so these are per-ISA functions chosen
// once at run time rather than FASTSR_MULTIVERSION clones of one body.
#define FASTSR_TILE_ARGS(T, A) const Plane<T, A>&P, const Dims&d, Scratch<A>&s, int64_t r0, int64_t r1
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
// 4: AVX-512 build, 3: AVX2, 1: baseline. FASTSR_SSIM_ISA=1 or 3 caps it, so that the
// tests run the narrower builds on any machine.
int simd_level() {
  __builtin_cpu_init();
  int level = __builtin_cpu_supports("x86-64-v4") ? 4 : __builtin_cpu_supports("x86-64-v3") ? 3 : 1;
  if (const char* cap = std::getenv("FASTSR_SSIM_ISA")) level = std::min(level, std::atoi(cap));
  return level;
}
#define FASTSR_DEFINE_TILE(T, A, NAME, IMPL)                                                        \
  __attribute__((target("arch=x86-64-v4"))) void NAME##_v4(FASTSR_TILE_ARGS(T, A)) {               \
    IMPL<64>(P, d, s, r0, r1);                                                                      \
  }                                                                                                 \
  __attribute__((target("arch=x86-64-v3"))) void NAME##_v3(FASTSR_TILE_ARGS(T, A)) {               \
    IMPL<32>(P, d, s, r0, r1);                                                                      \
  }                                                                                                 \
  void NAME##_v1(FASTSR_TILE_ARGS(T, A)) { IMPL<16>(P, d, s, r0, r1); }                             \
  void NAME(FASTSR_TILE_ARGS(T, A)) {                                                               \
    static const int level = simd_level();                                                          \
    if (level == 4) return NAME##_v4(P, d, s, r0, r1);                                              \
    if (level == 3) return NAME##_v3(P, d, s, r0, r1);                                              \
    NAME##_v1(P, d, s, r0, r1);                                                                     \
  }
#else
#define FASTSR_DEFINE_TILE(T, A, NAME, IMPL) \
  void NAME(FASTSR_TILE_ARGS(T, A)) { IMPL<16>(P, d, s, r0, r1); }
#endif
#define FASTSR_DEFINE_FOR(T, A)                          \
  FASTSR_DEFINE_TILE(T, A, value_tile, value_tile_impl) \
  FASTSR_DEFINE_TILE(T, A, grad_tile, grad_tile_impl)
FASTSR_DEFINE_FOR(float, float)
FASTSR_DEFINE_FOR(bf16_t, float)
FASTSR_DEFINE_FOR(double, double)
#undef FASTSR_DEFINE_TILE
#undef FASTSR_TILE_ARGS
#undef FASTSR_DEFINE_FOR

// ---- checks and shared setup ----------------------------------------------------------------
void check_inputs(const at::Tensor& x, const at::Tensor& y, int64_t win, const char* op) {
  check_activation(x, op, "x");
  check_size_products(x, op, "x");
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

// Tiles per plane: one when the planes alone split evenly over the threads (or are many),
// else enough that planes x tiles is a multiple of the thread count; tiles keep at least
// 2 * win rows so that the halo stays a small part of the work.
int64_t tiles_per_plane(int64_t planes, int64_t rows, int64_t win) {
  const int64_t nt = std::max<int64_t>(1, at::get_num_threads());
  int64_t t = 1;
  if (planes % nt != 0 && planes < 8 * nt) t = nt / std::gcd(planes, nt);
  return std::max<int64_t>(1, std::min<int64_t>(t, rows / (2 * win)));
}

// ---- op ------------------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor, at::Tensor> ssim_cpu(const at::Tensor& x, const at::Tensor& y,
                                                        double data_range, int64_t win, double sigma,
                                                        double k1, double k2, bool grad_x,
                                                        bool grad_y) {
  check_inputs(x, y, win, kOp);
  check_positive(data_range, kOp, "data_range");
  check_positive(sigma, kOp, "sigma");
  check_positive(k1, kOp, "k1");
  check_positive(k2, kOp, "k2");
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t Ho = H - win + 1, Wo = W - win + 1;
  const bool grad = grad_x || grad_y;
  const int64_t K = map_count(grad_x, grad_y);
  const auto acc_t = acc_scalar_type(x.scalar_type());
  auto grad_like = [&](const at::Tensor& t, bool want) {
    return want ? at::empty(t.sizes(), t.options().dtype(acc_t).memory_format(memory_format(layout_of(t))))
                : at::empty({0}, t.options().dtype(acc_t));
  };
  at::Tensor dx = grad_like(x, grad_x), dy = grad_like(y, grad_y);
  const int64_t planes = N * C;
  const int64_t rows = grad ? H : Ho;
  const int64_t tpp = tiles_per_plane(planes, rows, win);
  std::vector<double> rowsum(planes * Ho, 0.0);
  FASTSR_DISPATCH_FLOATING(x.scalar_type(), kOp, [&] {
    using A = typename acc<scalar_t>::type;
    using S = typename storage<scalar_t>::type;
    const std::vector<A> g = gaussian<A>(win, sigma);
    const A c1 = static_cast<A>((k1 * data_range) * (k1 * data_range));
    const A c2 = static_cast<A>((k2 * data_range) * (k2 * data_range));
    const A scale = static_cast<A>(1.0 / static_cast<double>(C * Ho * Wo));
    const S* xp = ptr<scalar_t>(x);
    const S* yp = ptr<scalar_t>(y);
    A* dxp = grad_x ? dx.data_ptr<A>() : nullptr;
    A* dyp = grad_y ? dy.data_ptr<A>() : nullptr;
    const Dims d = Dims::make<A>(W, win, K);
    at::parallel_for(0, planes * tpp, 1, [&](int64_t begin, int64_t end) {
      Scratch<A> s(d, win);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t plane = t / tpp, tile = t % tpp;
        const int64_t n = plane / C, c = plane % C;
        Plane<S, A> P{
            {xp + n * x.stride(0) + c * x.stride(1), x.stride(2), x.stride(3)},
            {yp + n * y.stride(0) + c * y.stride(1), y.stride(2), y.stride(3)},
            {dxp ? dxp + n * dx.stride(0) + c * dx.stride(1) : nullptr, grad_x ? dx.stride(2) : 0,
             grad_x ? dx.stride(3) : 0},
            {dyp ? dyp + n * dy.stride(0) + c * dy.stride(1) : nullptr, grad_y ? dy.stride(2) : 0,
             grad_y ? dy.stride(3) : 0},
            H, W, win, g.data(), c1, c2, scale, rowsum.data() + plane * Ho};
        const int64_t r0 = tile * rows / tpp, r1 = (tile + 1) * rows / tpp;
        if (grad) {
          grad_tile(P, d, s, r0, r1);
        } else {
          value_tile(P, d, s, r0, r1);
        }
      }
    });
  });
  at::Tensor out = at::empty({N}, x.options().dtype(at::kDouble));
  double* o = out.data_ptr<double>();
  const double inv_count = 1.0 / static_cast<double>(C * Ho * Wo);
  for (int64_t n = 0; n < N; ++n) {
    double acc_n = 0.0;
    for (int64_t k = 0; k < C * Ho; ++k) acc_n += rowsum[n * C * Ho + k];
    o[n] = acc_n * inv_count;
  }
  return {out.to(x.scalar_type()), dx, dy};
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, CPU, m) { m.impl("ssim", &fastsr::ssim_cpu); }
