// 3x3 stride-1 convolution with its epilogue, by Winograd's minimal filtering F(2x2, 3x3)
// (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"): every 2x2 output
// block is A^T [(G g G^T) . (B^T d B)] A of a 4x4 input tile d, i.e. 16 multiplications per
// output block and input/output channel pair instead of 36, 2.25x fewer. The 16 products over
// the input channels are 16 matrix products V_i (tiles x C) @ U_i (C x K), done here by a
// register-blocked micro-kernel (AVX512-BF16 dot products for bf16, AVX-512 FMA for fp32)
// with fp32 accumulation. Then, per output block and still in fp32, the output transform,
// bias, activation (none, ReLU, LeakyReLU, per-channel PReLU) and residual add, and one
// rounding to the output dtype: the convolution and its epilogue are one pass over memory.
//
// Layout: x and the residual are channels_last (N, H, W, C in memory), the output too. The
// weight is transformed and laid out once in Python (fastsr/ops/winograd.py):
//   fp32: u[i][c][k]                        (16, C, K)
//   bf16: u[i][c / 2][k][c % 2]             (16, C / 2, K, 2), the pair order of vdpbf16ps
// C and K must be multiples of 16; the caller falls back to oneDNN otherwise.
#include "common.h"

#include <immintrin.h>

#include <algorithm>
#include <vector>

namespace fastsr {
namespace {

constexpr const char* kOp = "fastsr::winograd_conv3x3";
constexpr int kRows = 6;          // tiles per micro-kernel call (rows of the GEMM)
constexpr int kBlockTiles = 36;   // tiles transformed together (kRows x 6)
enum Act : int64_t { kNone = 0, kRelu = 1, kLeaky = 2, kPrelu = 3 };


bool cpu_has_avx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"); }
bool cpu_has_avx512bf16() { return cpu_has_avx512() && __builtin_cpu_supports("avx512bf16"); }

// The kernels, from here to process_block, are compiled for AVX-512 with the BF16 extension
// and run only after the CPU checks of check_args (the fp32 path uses no BF16 instruction, so
// AVX-512F suffices). Nothing in this region instantiates a header template, so no code of
// another translation unit is built for this target.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

// ---------------------------------------------------------------- GEMM micro-kernels
// m[r][k0 .. k0 + 16 NV) = sum_c v[r][c] u[c][k] for R <= kRows rows, fp32 accumulation.
template <int R, int NV>
FASTSR_INLINE void micro_bf16(const bf16_t* v, int64_t C, const bf16_t* u, int64_t K, int64_t k0,
                                  float* m) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t cp = 0; cp < C / 2; ++cp) {
    __m512bh w[NV];
    for (int j = 0; j < NV; ++j)
      w[j] = (__m512bh)_mm512_loadu_si512(u + (cp * K + k0 + 16 * j) * 2);
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, v + r * C + 2 * cp, sizeof(pair));
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_dpbf16_ps(acc[r][j], a, w[j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(m + r * K + k0 + 16 * j, acc[r][j]);
}

template <int R, int NV>
FASTSR_INLINE void micro_f32(const float* v, int64_t C, const float* u, int64_t K, int64_t k0, float* m) {
  __m512 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    __m512 w[NV];
    for (int j = 0; j < NV; ++j) w[j] = _mm512_loadu_ps(u + c * K + k0 + 16 * j);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(v[r * C + c]);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(a, w[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) _mm512_storeu_ps(m + r * K + k0 + 16 * j, acc[r][j]);
}

// The R-row product over all K columns: 64 columns per call where it can, then 32, then 16.
template <typename T, int R>
void gemm_rows(const T* v, int64_t C, const T* u, int64_t K, float* m) {
  int64_t k0 = 0;
  for (; k0 + 64 <= K; k0 += 64) {
    if constexpr (std::is_same<T, bf16_t>::value) micro_bf16<R, 4>(v, C, u, K, k0, m);
    else micro_f32<R, 4>(v, C, u, K, k0, m);
  }
  for (; k0 + 32 <= K; k0 += 32) {
    if constexpr (std::is_same<T, bf16_t>::value) micro_bf16<R, 2>(v, C, u, K, k0, m);
    else micro_f32<R, 2>(v, C, u, K, k0, m);
  }
  for (; k0 < K; k0 += 16) {
    if constexpr (std::is_same<T, bf16_t>::value) micro_bf16<R, 1>(v, C, u, K, k0, m);
    else micro_f32<R, 1>(v, C, u, K, k0, m);
  }
}

// m (rows x K) = v (rows x C) @ u (C x K) for one of the 16 components.
template <typename T>
void gemm(const T* v, int64_t rows, int64_t C, const T* u, int64_t K, float* m) {
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows) gemm_rows<T, kRows>(v + r * C, C, u, K, m + r * K);
  switch (rows - r) {
    case 5: gemm_rows<T, 5>(v + r * C, C, u, K, m + r * K); break;
    case 4: gemm_rows<T, 4>(v + r * C, C, u, K, m + r * K); break;
    case 3: gemm_rows<T, 3>(v + r * C, C, u, K, m + r * K); break;
    case 2: gemm_rows<T, 2>(v + r * C, C, u, K, m + r * K); break;
    case 1: gemm_rows<T, 1>(v + r * C, C, u, K, m + r * K); break;
    default: break;
  }
}

// ---------------------------------------------------------------- transforms
struct Geometry {
  int64_t N, H, W, C, K, Ht, Wt;
};

// 16 channels as one fp32 vector, from and to the storage type (bf16: widened by a shift,
// narrowed by vcvtneps2bf16, round to nearest even as c10::BFloat16).
FASTSR_INLINE __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
FASTSR_INLINE __m512 load16(const bf16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
FASTSR_INLINE void store16(float* p, __m512 v) { _mm512_storeu_ps(p, v); }
FASTSR_INLINE void store16(bf16_t* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}

// V[i][t][c] = (B^T d B)[i] of the tile t = (ty, tx0 + t), whose 4x4 input pixels start at
// (2 ty - 1, 2 tx - 1); pixels outside the image are the zero padding. 16 channels at a time
// (C is a multiple of 16).
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
    for (int64_t c = 0; c < C; c += 16) {
      __m512 d[16], s[16];
      for (int i = 0; i < 16; ++i) d[i] = load16(p[i] + c);
      for (int b = 0; b < 4; ++b) {  // rows: B^T d
        s[0 + b] = _mm512_sub_ps(d[0 + b], d[8 + b]);
        s[4 + b] = _mm512_add_ps(d[4 + b], d[8 + b]);
        s[8 + b] = _mm512_sub_ps(d[8 + b], d[4 + b]);
        s[12 + b] = _mm512_sub_ps(d[4 + b], d[12 + b]);
      }
      for (int a = 0; a < 4; ++a) {  // columns: (B^T d) B
        const __m512* r = s + a * 4;
        T* out = V + (a * 4) * plane + t * C + c;
        store16(out, _mm512_sub_ps(r[0], r[2]));
        store16(out + plane, _mm512_add_ps(r[1], r[2]));
        store16(out + 2 * plane, _mm512_sub_ps(r[2], r[1]));
        store16(out + 3 * plane, _mm512_sub_ps(r[1], r[3]));
      }
    }
  }
}

struct Epilogue {
  const float* bias;   // (K,) or nullptr
  const float* prelu;  // (K,) slopes for kPrelu
  float slope;         // kLeaky
  int64_t act;
};

template <int ACT>
FASTSR_INLINE __m512 activate(__m512 v, __m512 slope) {
  if (ACT == kRelu) return _mm512_max_ps(v, _mm512_setzero_ps());
  if (ACT == kLeaky || ACT == kPrelu) {
    const __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LE_OQ);
    return _mm512_mask_mul_ps(v, neg, v, slope);
  }
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
    for (int64_t k = 0; k < K; k += 16) {
      const float* m = M + t * K + k;
      __m512 s[8];
      for (int b = 0; b < 4; ++b) {  // rows: A^T M
        const __m512 m1 = _mm512_loadu_ps(m + (4 + b) * plane), m2 = _mm512_loadu_ps(m + (8 + b) * plane);
        s[b] = _mm512_add_ps(_mm512_add_ps(_mm512_loadu_ps(m + b * plane), m1), m2);
        s[4 + b] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), _mm512_loadu_ps(m + (12 + b) * plane));
      }
      const __m512 bias = e.bias ? _mm512_loadu_ps(e.bias + k) : _mm512_setzero_ps();
      const __m512 slope = ACT == kPrelu ? _mm512_loadu_ps(e.prelu + k) : _mm512_set1_ps(e.slope);
      __m512 out[4];  // columns: (A^T M) A
      out[0] = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), s[2]);
      out[1] = _mm512_sub_ps(_mm512_sub_ps(s[1], s[2]), s[3]);
      out[2] = _mm512_add_ps(_mm512_add_ps(s[4], s[5]), s[6]);
      out[3] = _mm512_sub_ps(_mm512_sub_ps(s[5], s[6]), s[7]);
      for (int q = 0; q < 4; ++q) {
        if (!inside[q]) continue;
        __m512 v = activate<ACT>(_mm512_add_ps(out[q], bias), slope);
        if (RES) v = _mm512_add_ps(v, load16(res + base[q] * K + k));
        store16(y + base[q] * K + k, v);
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

// ---------------------------------------------------------------- one block of tiles
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

#pragma GCC pop_options

// ---------------------------------------------------------------- driver
template <typename T>
void run(const T* x, const T* u, const Geometry& g, const Epilogue& e, const T* res, T* y) {
  const int64_t blocks_per_row = (g.Wt + kBlockTiles - 1) / kBlockTiles;
  const int64_t units = g.N * g.Ht * blocks_per_row;
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> V(16 * kBlockTiles * g.C), zeros(g.C);
    std::vector<float> M(16 * kBlockTiles * g.K);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n = unit / (g.Ht * blocks_per_row), rem = unit % (g.Ht * blocks_per_row);
      const int64_t ty = rem / blocks_per_row, tx0 = (rem % blocks_per_row) * kBlockTiles;
      process_block(x, zeros.data(), u, g, e, res, n, ty, tx0, std::min<int64_t>(kBlockTiles, g.Wt - tx0),
                    V.data(), M.data(), y);
    }
  });
}

void check_args(const at::Tensor& x, const at::Tensor& u, const c10::optional<at::Tensor>& bias, int64_t act,
                const c10::optional<at::Tensor>& prelu, const c10::optional<at::Tensor>& residual) {
  check_activation(x, c10::DeviceType::CPU, kOp, "x");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16, kOp,
                   ": x must be float32 or bfloat16, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.is_contiguous(at::MemoryFormat::ChannelsLast), kOp, ": x must be channels_last");
  check_cpu(u, kOp, "weight");
  TORCH_CHECK_TYPE(u.scalar_type() == x.scalar_type(), kOp, ": weight must have the dtype of x (",
                   x.scalar_type(), "), got ", u.scalar_type());
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  const int64_t C = x.size(1);
  TORCH_CHECK_VALUE(u.is_contiguous() && (bf16 ? (u.dim() == 4 && u.size(0) == 16 && u.size(1) * 2 == C &&
                                                  u.size(3) == 2)
                                               : (u.dim() == 3 && u.size(0) == 16 && u.size(1) == C)),
                    kOp, ": weight must be the contiguous Winograd-transformed weight of ", C,
                    " input channels (fastsr.ops.winograd_weight), got shape ", u.sizes());
  const int64_t K = u.size(2);
  TORCH_CHECK_VALUE(K % 16 == 0 && K > 0, kOp, ": output channels must be a multiple of 16, got ", K);
  TORCH_CHECK_VALUE(C % 16 == 0 && C > 0, kOp, ": input channels must be a multiple of 16, got ", C);
  TORCH_CHECK_VALUE(act >= kNone && act <= kPrelu, kOp, ": act must be 0 (none), 1 (relu), 2 (leaky_relu) or "
                    "3 (prelu), got ", act);
  for (const auto* p : {&bias, &prelu}) {
    if (!p->has_value()) continue;
    const char* arg = p == &bias ? "bias" : "prelu_weight";
    check_cpu(**p, kOp, arg);
    TORCH_CHECK_VALUE((*p)->dim() == 1 && (*p)->size(0) == K, kOp, ": ", arg, " must be 1-D with ", K,
                      " elements, got shape ", (*p)->sizes());
    TORCH_CHECK_TYPE((*p)->scalar_type() == at::kFloat, kOp, ": ", arg, " must be float32");
  }
  TORCH_CHECK_VALUE(act != kPrelu || prelu.has_value(), kOp, ": act 3 (prelu) needs prelu_weight");
  if (residual.has_value()) {
    check_cpu(*residual, kOp, "residual");
    TORCH_CHECK_VALUE(residual->dim() == 4 && residual->size(0) == x.size(0) && residual->size(1) == K &&
                      residual->size(2) == x.size(2) && residual->size(3) == x.size(3), kOp,
                      ": residual must have the output shape (", x.size(0), ", ", K, ", ", x.size(2), ", ",
                      x.size(3), "), got ", residual->sizes());
    TORCH_CHECK_TYPE(residual->scalar_type() == x.scalar_type(), kOp, ": residual must have the dtype of x");
  }
  TORCH_CHECK(bf16 ? cpu_has_avx512bf16() : cpu_has_avx512(), kOp, ": this CPU lacks ",
              bf16 ? "AVX512-BF16" : "AVX-512", " (fastsr.ops.winograd_supported says where it runs)");
}

at::Tensor winograd_conv3x3_cpu(const at::Tensor& x, const at::Tensor& u, const c10::optional<at::Tensor>& bias,
                                int64_t act, double slope, const c10::optional<at::Tensor>& prelu,
                                const c10::optional<at::Tensor>& residual_in) {
  check_args(x, u, bias, act, prelu, residual_in);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = u.size(2);
  const Geometry g{N, H, W, C, K, (H + 1) / 2, (W + 1) / 2};
  at::Tensor y = at::empty({N, K, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  at::Tensor res;
  if (residual_in.has_value()) res = residual_in->contiguous(at::MemoryFormat::ChannelsLast);
  const Epilogue e{bias.has_value() ? bias->contiguous().data_ptr<float>() : nullptr,
                   prelu.has_value() ? prelu->contiguous().data_ptr<float>() : nullptr,
                   static_cast<float>(slope), act};
  if (x.scalar_type() == at::kBFloat16) {
    run<bf16_t>(ptr<at::BFloat16>(x), ptr<at::BFloat16>(u), g, e, res.defined() ? ptr<at::BFloat16>(res) : nullptr,
                ptr<at::BFloat16>(y));
  } else {
    run<float>(x.data_ptr<float>(), u.data_ptr<float>(), g, e, res.defined() ? res.data_ptr<float>() : nullptr,
               y.data_ptr<float>());
  }
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsr, CPU, m) { m.impl("winograd_conv3x3", &winograd_conv3x3_cpu); }

}  // namespace fastsr
