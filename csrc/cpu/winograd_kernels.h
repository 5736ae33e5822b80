// The ISA-generic body of the Winograd F(2x2, 3x3) kernel (csrc/cpu/winograd.cpp): GEMM
// blocking, input and output transforms with the epilogue, and one block of tiles. It is
// included once per instruction set, inside that set's `#pragma GCC target` region and its own
// namespace, which first defines the vector type and its operations:
//   vec, kLanes (fp32 lanes), kMaxCols (widest micro-kernel, in vectors),
//   vload(const float* | const bf16_t*), vstore(float* | bf16_t*, vec), vadd, vsub, vmax,
//   vzero(), vset1(float), vleaky(v, slope) (v <= 0 ? v * slope : v),
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

// V[i][t][c] = (B^T d B)[i] of the tile t = (ty, tx0 + t), whose 4x4 input pixels start at
// (2 ty - 1, 2 tx - 1); pixels outside the image are the zero padding. kLanes channels at a
// time (C is a multiple of 16).
template <typename T>
FASTSR_INLINE void input_transform(const T* x, const T* zeros, const Geometry& g, int64_t n, int64_t ty,
                                   int64_t tx0, int64_t tiles, T* V) {
  const int64_t C = g.C, plane = kBlockTiles * C;
  for (int64_t t = 0; t < tiles; ++t) {
    const T* p[16];
    for (int a = 0; a < 4; ++a) {
      const int64_t y = 2 * ty - 1 + a;
      for (int b = 0; b < 4; ++b) {
        const int64_t xx = 2 * (tx0 + t) - 1 + b;
        const bool in = y >= 0 && y < g.H && xx >= 0 && xx < g.W;
        p[a * 4 + b] = in ? x + ((n * g.H + y) * g.W + xx) * C : zeros;
      }
    }
    for (int64_t c = 0; c < C; c += kLanes) {
      vec d[16], s[16];
      for (int i = 0; i < 16; ++i) d[i] = vload(p[i] + c);
      for (int b = 0; b < 4; ++b) {  // rows: B^T d
        s[0 + b] = vsub(d[0 + b], d[8 + b]);
        s[4 + b] = vadd(d[4 + b], d[8 + b]);
        s[8 + b] = vsub(d[8 + b], d[4 + b]);
        s[12 + b] = vsub(d[4 + b], d[12 + b]);
      }
      for (int a = 0; a < 4; ++a) {  // columns: (B^T d) B
        const vec* r = s + a * 4;
        T* out = V + (a * 4) * plane + t * C + c;
        vstore(out, vsub(r[0], r[2]));
        vstore(out + plane, vadd(r[1], r[2]));
        vstore(out + 2 * plane, vsub(r[2], r[1]));
        vstore(out + 3 * plane, vsub(r[1], r[3]));
      }
    }
  }
}

template <int ACT>
FASTSR_INLINE vec activate(vec v, vec slope) {
  if (ACT == kRelu) return vmax(v, vzero());
  if (ACT == kLeaky || ACT == kPrelu) return vleaky(v, slope);
  return v;
}

// y[2 ty + a][2 tx + b] = act((A^T M A)[a][b] + bias) + residual, for the pixels inside the
// image; ACT and RES are template arguments so that the loops have no branches on values.
template <typename T, int ACT, bool RES>
FASTSR_INLINE void output_transform_impl(const float* M, const Geometry& g, const Epilogue& e, const T* res,
                                         int64_t n, int64_t ty, int64_t tx0, int64_t tiles, T* y) {
  const int64_t K = g.K, plane = kBlockTiles * K;
  for (int64_t t = 0; t < tiles; ++t) {
    const int64_t oy = 2 * ty, ox = 2 * (tx0 + t);
    const int64_t base[4] = {(n * g.H + oy) * g.W + ox, (n * g.H + oy) * g.W + ox + 1,
                             (n * g.H + oy + 1) * g.W + ox, (n * g.H + oy + 1) * g.W + ox + 1};
    const bool inside[4] = {true, ox + 1 < g.W, oy + 1 < g.H, oy + 1 < g.H && ox + 1 < g.W};
    for (int64_t k = 0; k < K; k += kLanes) {
      const float* m = M + t * K + k;
      vec s[8];
      for (int b = 0; b < 4; ++b) {  // rows: A^T M
        const vec m1 = vload(m + (4 + b) * plane), m2 = vload(m + (8 + b) * plane);
        s[b] = vadd(vadd(vload(m + b * plane), m1), m2);
        s[4 + b] = vsub(vsub(m1, m2), vload(m + (12 + b) * plane));
      }
      const vec bias = e.bias ? vload(e.bias + k) : vzero();
      const vec slope = ACT == kPrelu ? vload(e.prelu + k) : vset1(e.slope);
      vec out[4];  // columns: (A^T M) A
      out[0] = vadd(vadd(s[0], s[1]), s[2]);
      out[1] = vsub(vsub(s[1], s[2]), s[3]);
      out[2] = vadd(vadd(s[4], s[5]), s[6]);
      out[3] = vsub(vsub(s[5], s[6]), s[7]);
      for (int q = 0; q < 4; ++q) {
        if (!inside[q]) continue;
        vec v = activate<ACT>(vadd(out[q], bias), slope);
        if (RES) v = vadd(v, vload(res + base[q] * K + k));
        vstore(y + base[q] * K + k, v);
      }
    }
  }
}

template <typename T, int ACT>
FASTSR_INLINE void output_transform_act(const float* M, const Geometry& g, const Epilogue& e, const T* res,
                                        int64_t n, int64_t ty, int64_t tx0, int64_t tiles, T* y) {
  if (res) output_transform_impl<T, ACT, true>(M, g, e, res, n, ty, tx0, tiles, y);
  else output_transform_impl<T, ACT, false>(M, g, e, res, n, ty, tx0, tiles, y);
}

template <typename T>
void output_transform(const float* M, const Geometry& g, const Epilogue& e, const T* res, int64_t n, int64_t ty,
                      int64_t tx0, int64_t tiles, T* y) {
  switch (e.act) {
    case kRelu: output_transform_act<T, kRelu>(M, g, e, res, n, ty, tx0, tiles, y); break;
    case kLeaky: output_transform_act<T, kLeaky>(M, g, e, res, n, ty, tx0, tiles, y); break;
    case kPrelu: output_transform_act<T, kPrelu>(M, g, e, res, n, ty, tx0, tiles, y); break;
    default: output_transform_act<T, kNone>(M, g, e, res, n, ty, tx0, tiles, y); break;
  }
}

// One unit of work: the tiles tx0 .. tx0 + tiles of tile row ty of image n, with V and M the
// caller's scratch buffers.
template <typename T>
__attribute__((noinline)) void process_block(const T* x, const T* zeros, const T* u, const Geometry& g,
                                             const Epilogue& e, const T* res, int64_t n, int64_t ty, int64_t tx0,
                                             int64_t tiles, T* V, float* M, T* y) {
  input_transform(x, zeros, g, n, ty, tx0, tiles, V);
  for (int i = 0; i < 16; ++i)
    gemm<T>(V + i * kBlockTiles * g.C, tiles, g.C, u + i * g.C * g.K, g.K, M + i * kBlockTiles * g.K);
  output_transform(M, g, e, res, n, ty, tx0, tiles, y);
}
