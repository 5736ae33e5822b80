// The ISA-generic body of the Winograd F(2x2, 3x3) kernel (csrc/cpu/winograd.cpp): GEMM
// blocking, input and output transforms with the epilogue, and one block of tiles. It is
// included once per instruction set, inside that set's `#pragma GCC target` region and its own
// namespace, which first defines the vector type and its operations:
//   vec, kLanes (fp32 lanes), kMaxCols (widest micro-kernel, in vectors),
//   vload(const float* | const bf16_t*), vstore(float* | bf16_t*, vec), vadd, vsub, vmax,
//   vmul, vfmadd(a, b, c) (a b + c), vzero(), vset1(float), vleaky(v, slope) (v <= 0 ? v * slope : v),
//   micro<R, NV>(v, C, u, K, k0, m): m[r][k0 .. k0 + kLanes NV) = sum_c v[r][c] u[c][k].
// Nothing here may instantiate a template of another header (std::min, std::vector, ...):
// that code would be compiled for this target and could be picked by the linker for callers
// on CPUs without it.

// The R-row product over all K columns: the widest micro-kernel where it fits, then halves.
template <typename T, int R, int NV = kMaxCols>
FASTSR_INLINE void gemm_cols(const T* v, int64_t C, const T* u, int64_t K, float* m, int64_t k0 = 0) {
  for (; k0 + kLanes * NV <= K; k0 += kLanes * NV) micro<R, NV>(v, C, u, K, k0, m);
  if constexpr (NV > 1) gemm_cols<T, R, NV / 2>(v, C, u, K, m, k0);
}

// m (rows x K) = v (rows x C) @ u (C x K) for one of the 16 components.
template <typename T>
void gemm(const T* v, int64_t rows, int64_t C, const T* u, int64_t K, float* m) {
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) gemm_cols<T, kRows>(v + r * C, C, u, K, m + r * K);
  switch (rows - r) {
    case 5: gemm_cols<T, 5>(v + r * C, C, u, K, m + r * K); break;
    case 4: gemm_cols<T, 4>(v + r * C, C, u, K, m + r * K); break;
    case 3: gemm_cols<T, 3>(v + r * C, C, u, K, m + r * K); break;
    case 2: gemm_cols<T, 2>(v + r * C, C, u, K, m + r * K); break;
    case 1: gemm_cols<T, 1>(v + r * C, C, u, K, m + r * K); break;
    default: break;
  }
}

// The tile transforms of one vector of channels. F(2x2, 3x3): d is the 4x4 input tile (row
// major), out the 16 components of B^T d B; F(4x4, 3x3): 6x6 and 36 (Lavin & Gray's B^T:
// rows 4 0 -5 0 1 0 / 0 -4 -4 1 1 0 / 0 4 -4 -1 1 0 / 0 -2 -1 2 1 0 / 0 2 -1 -2 1 0 /
// 0 4 0 -5 0 1).
template <int TM>
FASTSR_INLINE void tile_in(const vec* d, vec* out);

template <>
FASTSR_INLINE void tile_in<2>(const vec* d, vec* out) {
  vec s[16];
  for (int b = 0; b < 4; ++b) {  // rows: B^T d
    s[0 + b] = vsub(d[0 + b], d[8 + b]);
    s[4 + b] = vadd(d[4 + b], d[8 + b]);
    s[8 + b] = vsub(d[8 + b], d[4 + b]);
    s[12 + b] = vsub(d[4 + b], d[12 + b]);
  }
  for (int a = 0; a < 4; ++a) {  // columns: (B^T d) B
    const vec* r = s + a * 4;
    out[a * 4 + 0] = vsub(r[0], r[2]);
    out[a * 4 + 1] = vadd(r[1], r[2]);
    out[a * 4 + 2] = vsub(r[2], r[1]);
    out[a * 4 + 3] = vsub(r[1], r[3]);
  }
}

// B^T applied to six vectors d[0], d[stride], ..., d[5 stride], into o[0], o[ostride], ...
FASTSR_INLINE void bt6(const vec* d, int stride, vec* o, int ostride) {
  const vec d0 = d[0], d1 = d[stride], d2 = d[2 * stride], d3 = d[3 * stride], d4 = d[4 * stride],
            d5 = d[5 * stride];
  const vec four = vset1(4.0f), five = vset1(-5.0f), two = vset1(2.0f);
  const vec a = vfmadd(vset1(-4.0f), d2, d4);  // d4 - 4 d2
  const vec b = vfmadd(vset1(-4.0f), d1, d3);  // d3 - 4 d1
  const vec c = vsub(d4, d2);
  const vec e = vmul(two, vsub(d3, d1));
  o[0] = vfmadd(four, d0, vfmadd(five, d2, d4));
  o[ostride] = vadd(a, b);
  o[2 * ostride] = vsub(a, b);
  o[3 * ostride] = vadd(c, e);
  o[4 * ostride] = vsub(c, e);
  o[5 * ostride] = vfmadd(four, d1, vfmadd(five, d3, d5));
}

template <>
FASTSR_INLINE void tile_in<4>(const vec* d, vec* out) {
  vec s[36];
  for (int b = 0; b < 6; ++b) bt6(d + b, 6, s + b, 6);        // rows: B^T d
  for (int a = 0; a < 6; ++a) bt6(s + a * 6, 1, out + a * 6, 1);  // columns: (B^T d) B
}

// A^T M A of the (TM + 2)^2 components m into the TM x TM outputs o (row major).
// F(4x4, 3x3)'s A^T: rows 1 1 1 1 1 0 / 0 1 -1 2 -2 0 / 0 1 1 4 4 0 / 0 1 -1 8 -8 1.
template <int TM>
FASTSR_INLINE void tile_out(const vec* m, vec* o);

template <>
FASTSR_INLINE void tile_out<2>(const vec* m, vec* o) {
  vec s[8];
  for (int b = 0; b < 4; ++b) {  // rows: A^T M
    s[b] = vadd(vadd(m[b], m[4 + b]), m[8 + b]);
    s[4 + b] = vsub(vsub(m[4 + b], m[8 + b]), m[12 + b]);
  }
  o[0] = vadd(vadd(s[0], s[1]), s[2]);  // columns: (A^T M) A
  o[1] = vsub(vsub(s[1], s[2]), s[3]);
  o[2] = vadd(vadd(s[4], s[5]), s[6]);
  o[3] = vsub(vsub(s[5], s[6]), s[7]);
}

// A^T applied to six vectors m[0], m[stride], ..., into o[0], o[ostride], o[2 ostride], o[3 ostride].
FASTSR_INLINE void at6(const vec* m, int stride, vec* o, int ostride) {
  const vec a = vadd(m[stride], m[2 * stride]), b = vsub(m[stride], m[2 * stride]);
  const vec c = vadd(m[3 * stride], m[4 * stride]), d = vsub(m[3 * stride], m[4 * stride]);
  o[0] = vadd(vadd(m[0], a), c);
  o[ostride] = vfmadd(vset1(2.0f), d, b);
  o[2 * ostride] = vfmadd(vset1(4.0f), c, a);
  o[3 * ostride] = vadd(vfmadd(vset1(8.0f), d, b), m[5 * stride]);
}

template <>
FASTSR_INLINE void tile_out<4>(const vec* m, vec* o) {
  vec s[24];
  for (int b = 0; b < 6; ++b) at6(m + b, 6, s + b, 6);       // rows: A^T M (4 x 6)
  for (int a = 0; a < 4; ++a) at6(s + a * 6, 1, o + a * 4, 1);  // columns: (A^T M) A
}

// V[i][t][c] = (B^T d B)[i] of the tile t = (ty, tx0 + t), whose (TM + 2)^2 input pixels start
// at (TM ty - 1, TM tx - 1); pixels outside the image are the zero padding. kLanes channels at
// a time (C is a multiple of 16).
template <typename T, int TM>
FASTSR_INLINE void input_transform(const T* x, const T* zeros, const Geometry& g, int64_t n, int64_t ty,
                                   int64_t tx0, int64_t tiles, T* V) {
  constexpr int A = TM + 2;
  const int64_t C = g.C, plane = kBlockTiles * C;
  for (int64_t t = 0; t < tiles; ++t) {
    const T* p[A * A];
    for (int a = 0; a < A; ++a) {
      const int64_t y = TM * ty - 1 + a;
      for (int b = 0; b < A; ++b) {
        const int64_t xx = TM * (tx0 + t) - 1 + b;
        const bool in = y >= 0 && y < g.H && xx >= 0 && xx < g.W;
        p[a * A + b] = in ? x + ((n * g.H + y) * g.W + xx) * C : zeros;
      }
    }
    for (int64_t c = 0; c < C; c += kLanes) {
      vec d[A * A], out[A * A];
      for (int i = 0; i < A * A; ++i) d[i] = vload(p[i] + c);
      tile_in<TM>(d, out);
      T* o = V + t * C + c;
      for (int i = 0; i < A * A; ++i) vstore(o + i * plane, out[i]);
    }
  }
}

template <int ACT>
FASTSR_INLINE vec activate(vec v, vec slope) {
  if (ACT == kRelu) return vmax(v, vzero());
  if (ACT == kLeaky || ACT == kPrelu) return vleaky(v, slope);
  return v;
}

// y[TM ty + a][TM tx + b] = act((A^T M A)[a][b] + bias) + residual, for the pixels inside the
// image; ACT and RES are template arguments so that the loops have no branches on values.
template <typename T, int TM, int ACT, bool RES>
FASTSR_INLINE void output_transform_impl(const float* M, const Geometry& g, const Epilogue& e, const T* res,
                                         int64_t n, int64_t ty, int64_t tx0, int64_t tiles, T* y) {
  constexpr int A = TM + 2;
  const int64_t K = g.K, plane = kBlockTiles * K;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t oy = TM * ty, ox = TM * (tx0 + t);
    const int rows = g.H - oy < TM ? static_cast<int>(g.H - oy) : TM;
    const int cols = g.W - ox < TM ? static_cast<int>(g.W - ox) : TM;
    for (int64_t k = 0; k < K; k += kLanes) {
      const float* m = M + t * K + k;
      vec mm[A * A], out[TM * TM];
      for (int i = 0; i < A * A; ++i) mm[i] = vload(m + i * plane);
      tile_out<TM>(mm, out);
      const vec bias = e.bias ? vload(e.bias + k) : vzero();
      const vec slope = ACT == kPrelu ? vload(e.prelu + k) : vset1(e.slope);
      for (int a = 0; a < TM; ++a) {  // constant trip counts (unrolled); edge tiles stop early
        if (a == rows) break;
        for (int b = 0; b < TM; ++b) {
          if (b == cols) break;
          const int64_t at = ((n * g.H + oy + a) * g.W + ox + b) * K + k;
          vec v = activate<ACT>(vadd(out[a * TM + b], bias), slope);
          if (RES) v = vadd(v, vload(res + at));
          vstore(y + at, v);
        }
      }
    }
  }
}

template <typename T, int TM, int ACT>
FASTSR_INLINE void output_transform_act(const float* M, const Geometry& g, const Epilogue& e, const T* res,
                                        int64_t n, int64_t ty, int64_t tx0, int64_t tiles, T* y) {
  if (res) output_transform_impl<T, TM, ACT, true>(M, g, e, res, n, ty, tx0, tiles, y);
  else output_transform_impl<T, TM, ACT, false>(M, g, e, res, n, ty, tx0, tiles, y);
}

template <typename T, int TM>
void output_transform(const float* M, const Geometry& g, const Epilogue& e, const T* res, int64_t n, int64_t ty,
                      int64_t tx0, int64_t tiles, T* y) {
  switch (e.act) {
    case kRelu: output_transform_act<T, TM, kRelu>(M, g, e, res, n, ty, tx0, tiles, y); break;
    case kLeaky: output_transform_act<T, TM, kLeaky>(M, g, e, res, n, ty, tx0, tiles, y); break;
    case kPrelu: output_transform_act<T, TM, kPrelu>(M, g, e, res, n, ty, tx0, tiles, y); break;
    default: output_transform_act<T, TM, kNone>(M, g, e, res, n, ty, tx0, tiles, y); break;
  }
}

// One unit of work: the tiles tx0 .. tx0 + tiles (at most kBlockTiles) of tile row ty of image
// n, F(TM x TM, 3x3), with V and M the caller's scratch buffers ((TM + 2)^2 components each).
template <typename T, int TM>
__attribute__((noinline)) void process_block(const T* x, const T* zeros, const T* u, const Geometry& g,
                                             const Epilogue& e, const T* res, int64_t n, int64_t ty, int64_t tx0,
                                             int64_t tiles, T* V, float* M, T* y) {
  input_transform<T, TM>(x, zeros, g, n, ty, tx0, tiles, V);
  for (int i = 0; i < (TM + 2) * (TM + 2); ++i)
    gemm<T>(V + i * kBlockTiles * g.C, tiles, g.C, u + i * g.C * g.K, g.K, M + i * kBlockTiles * g.K);
  output_transform<T, TM>(M, g, e, res, n, ty, tx0, tiles, y);
}

// ---------------------------------------------------------------- weight gradient (fp32)
// The weight gradient of y = A^T [U . V] A is, per component i, dU_i = V_i^T dM_i with dM the
// adjoint transform A dy A^T of each output-gradient tile; dW = G^T dU G (in Python). Exact in
// exact arithmetic, since the algorithm computes the convolution exactly for every weight.

// The adjoint of tile_out: the (TM + 2)^2 components A o A^T of a TM x TM gradient tile o.
template <int TM>
FASTSR_INLINE void tile_out_adjoint(const vec* o, vec* m);

template <>
FASTSR_INLINE void tile_out_adjoint<2>(const vec* o, vec* m) {
  // A = (A^T)^T, rows 1 0 / 1 1 / 1 -1 / 0 -1
  vec s[8];
  for (int b = 0; b < 2; ++b) {  // rows: A o (4 x 2)
    s[b] = o[b];
    s[2 + b] = vadd(o[b], o[2 + b]);
    s[4 + b] = vsub(o[b], o[2 + b]);
    s[6 + b] = vsub(vzero(), o[2 + b]);
  }
  for (int a = 0; a < 4; ++a) {  // columns: (A o) A^T
    const vec* r = s + a * 2;
    m[a * 4 + 0] = r[0];
    m[a * 4 + 1] = vadd(r[0], r[1]);
    m[a * 4 + 2] = vsub(r[0], r[1]);
    m[a * 4 + 3] = vsub(vzero(), r[1]);
  }
}

// A (6 x 4, F(4x4, 3x3)) applied to four vectors o[0], o[stride], ..., into six: rows of A are
// 1 0 0 0 / 1 1 1 1 / 1 -1 1 -1 / 1 2 4 8 / 1 -2 4 -8 / 0 0 0 1.
FASTSR_INLINE void a6(const vec* o, int stride, vec* m, int mstride) {
  const vec o0 = o[0], o1 = o[stride], o2 = o[2 * stride], o3 = o[3 * stride];
  const vec e = vadd(o0, o2), f = vadd(o1, o3);
  const vec g = vfmadd(vset1(4.0f), o2, o0), h = vfmadd(vset1(8.0f), o3, vmul(vset1(2.0f), o1));
  m[0] = o0;
  m[mstride] = vadd(e, f);
  m[2 * mstride] = vsub(e, f);
  m[3 * mstride] = vadd(g, h);
  m[4 * mstride] = vsub(g, h);
  m[5 * mstride] = o3;
}

template <>
FASTSR_INLINE void tile_out_adjoint<4>(const vec* o, vec* m) {
  vec s[24];
  for (int b = 0; b < 4; ++b) a6(o + b, 4, s + b, 4);         // rows: A o (6 x 4)
  for (int a = 0; a < 6; ++a) a6(s + a * 4, 1, m + a * 6, 1);  // columns: (A o) A^T
}

// dM[i][t][k] = (A dy A^T)[i] of the output-gradient tile t = (ty, tx0 + t) (zero outside the
// image: those outputs were discarded), written from tile slot `slot` of the block on.
template <int TM>
FASTSR_INLINE void grad_transform(const float* dy, const Geometry& g, int64_t n, int64_t ty, int64_t tx0,
                                  int64_t tiles, int64_t slot, float* M) {
  constexpr int A = TM + 2;
  const int64_t K = g.K, plane = kBlockTiles * K;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t oy = TM * ty, ox = TM * (tx0 + t);
    for (int64_t k = 0; k < K; k += kLanes) {
      vec o[TM * TM], mm[A * A];
      for (int a = 0; a < TM; ++a)
        for (int b = 0; b < TM; ++b)
          o[a * TM + b] = oy + a < g.H && ox + b < g.W ? vload(dy + ((n * g.H + oy + a) * g.W + ox + b) * K + k)
                                                       : vzero();
      tile_out_adjoint<TM>(o, mm);
      float* out = M + (slot + t) * K + k;
      for (int i = 0; i < A * A; ++i) vstore(out + i * plane, mm[i]);
    }
  }
}

// du[r][k0 .. k0 + kLanes NV) += sum_t v[t][r] dm[t][k] for R <= kRows rows (input channels):
// v and du start at the block's first input channel; v's rows are C apart, dm's K.
template <int R, int NV>
FASTSR_INLINE void wmicro(const float* v, int64_t C, const float* dm, int64_t K, int64_t tiles, int64_t k0,
                          float* du) {
  vec acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = vload(du + r * K + k0 + kLanes * j);
  for (int64_t t = 0; t < tiles; ++t) {
    vec b[NV];
    for (int j = 0; j < NV; ++j) b[j] = vload(dm + t * K + k0 + kLanes * j);
    for (int r = 0; r < R; ++r) {
      const vec a = vset1(v[t * C + r]);
      for (int j = 0; j < NV; ++j) acc[r][j] = vfmadd(a, b[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) vstore(du + r * K + k0 + kLanes * j, acc[r][j]);
}

template <int R, int NV = kMaxCols>
FASTSR_INLINE void wgemm_cols(const float* v, int64_t C, const float* dm, int64_t K, int64_t tiles, float* du,
                              int64_t k0 = 0) {
  for (; k0 + kLanes * NV <= K; k0 += kLanes * NV) wmicro<R, NV>(v, C, dm, K, tiles, k0, du);
  if constexpr (NV > 1) wgemm_cols<R, NV / 2>(v, C, dm, K, tiles, du, k0);
}

// du (C x K) += v^T (C x tiles) @ dm (tiles x K) for one component.
FASTSR_INLINE void wgemm(const float* v, int64_t C, const float* dm, int64_t K, int64_t tiles, float* du) {
  int64_t c = 0;
  for (; c + kRows <= C; c += kRows) wgemm_cols<kRows>(v + c, C, dm, K, tiles, du + c * K);
  switch (C - c) {
    case 5: wgemm_cols<5>(v + c, C, dm, K, tiles, du + c * K); break;
    case 4: wgemm_cols<4>(v + c, C, dm, K, tiles, du + c * K); break;
    case 3: wgemm_cols<3>(v + c, C, dm, K, tiles, du + c * K); break;
    case 2: wgemm_cols<2>(v + c, C, dm, K, tiles, du + c * K); break;
    case 1: wgemm_cols<1>(v + c, C, dm, K, tiles, du + c * K); break;
    default: break;
  }
}

// One unit of the weight gradient: up to kBlockTiles consecutive tiles (row-major over the tile
// grid, rows may change inside the block) of image n from tile index first on, accumulated into
// du ((TM + 2)^2, C, K), with V and M scratch as in process_block.
template <int TM>
__attribute__((noinline)) void wgrad_block(const float* x, const float* zeros, const float* dy, const Geometry& g,
                                           int64_t n, int64_t first, int64_t tiles, float* V, float* M,
                                           float* du) {
  for (int64_t slot = 0; slot < tiles;) {
    const int64_t ty = (first + slot) / g.Wt, tx0 = (first + slot) % g.Wt;
    const int64_t run = g.Wt - tx0 < tiles - slot ? g.Wt - tx0 : tiles - slot;
    input_transform<float, TM>(x, zeros, g, n, ty, tx0, run, V + slot * g.C);
    grad_transform<TM>(dy, g, n, ty, tx0, run, slot, M);
    slot += run;
  }
  for (int i = 0; i < (TM + 2) * (TM + 2); ++i)
    wgemm(V + i * kBlockTiles * g.C, g.C, M + i * kBlockTiles * g.K, g.K, tiles, du + i * g.C * g.K);
}
