// 3x3 stride-1 convolution with its epilogue, by Winograd's minimal filtering F(2x2, 3x3)
// (Lavin & Gray 2016, "Fast Algorithms for Convolutional Neural Networks"): every 2x2 output
// block is A^T [(G g G^T) . (B^T d B)] A of a 4x4 input tile d, i.e. 16 multiplications per
// output block and input/output channel pair instead of 36, 2.25x fewer. The 16 products over
// the input channels are 16 matrix products V_i (tiles x C) @ U_i (C x K), done here by a
// register-blocked micro-kernel (AVX512-BF16 dot products for bf16; AVX-512 FMA, or AVX2 FMA
// on CPUs without AVX-512, for fp32) with fp32 accumulation. Then, per output block and still in fp32, the output transform,
// bias, activation (none, ReLU, LeakyReLU, per-channel PReLU) and residual add, and one
// rounding to the output dtype: the convolution and its epilogue are one pass over memory.
//
// fp32 also runs F(4x4, 3x3): 6x6 input tiles, 36 products per 4x4 output block, 4x fewer
// multiplications than direct; its transforms have larger coefficients (up to 8 and 1/24), so
// its rounding error is larger (about 1e-6 of the output scale against 2e-7) -- too large for
// bf16, which keeps F(2x2, 3x3).
//
// Layout: x and the residual are channels_last (N, H, W, C in memory), the output too. The
// weight is transformed and laid out once in Python (fastsr/ops/winograd.py):
//   fp32: u[i][c][k]                        (16 or 36, C, K): F(2x2, 3x3) or F(4x4, 3x3)
//   bf16: u[i][c / 2][k][c % 2]             (16, C / 2, K, 2), the pair order of vdpbf16ps
// C and K must be multiples of 16; the caller falls back to oneDNN otherwise.
//
// Training: winograd_conv3x3_wgrad is the fp32 weight gradient in the Winograd domain (per
// component, dU_i = V_i^T (A dy A^T)_i, summed over tiles; Python finishes dW = G^T dU G), 3-4x
// fewer multiplications than the direct weight gradient; the input gradient is this same
// forward kernel on the output gradient with the rotated, transposed weight.
//
// The body is ISA-generic (winograd_kernels.h) and compiled once per instruction set in the
// target regions below; the driver picks one at run time (AVX-512 where present, else AVX2).
#include "common.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

namespace fastsr {
namespace {

constexpr const char* kOp = "fastsr::winograd_conv3x3";
constexpr int kRows = 6;          // tiles per micro-kernel call (rows of the GEMM)
constexpr int kBlockTiles = 36;   // tiles transformed together (kRows x 6)
enum Act : int64_t { kNone = 0, kRelu = 1, kLeaky = 2, kPrelu = 3 };

struct Geometry {
  int64_t N, H, W, C, K, Ht, Wt;
};

struct Epilogue {
  const float* bias;   // (K,) or nullptr
  const float* prelu;  // (K,) slopes for kPrelu
  float slope;         // kLeaky
  int64_t act;
};

bool cpu_has_avx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"); }
bool cpu_has_avx512bf16() { return cpu_has_avx512() && __builtin_cpu_supports("avx512bf16"); }
bool cpu_has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

// Each target region below runs only after the CPU checks of check_args (the fp32 path of the
// AVX-512 region uses no BF16 instruction, so AVX-512F suffices there). Nothing in either
// region instantiates a header template, so no code of another translation unit is built
// for these targets.

// ================================================================ AVX-512 (+ BF16)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
namespace avx512 {

using vec = __m512;
constexpr int kLanes = 16;
constexpr int kMaxCols = 4;  // 6 x 64 micro-kernel: 24 accumulators of the 32 zmm registers

// 16 channels as one fp32 vector, from and to the storage type (bf16: widened by a shift,
// narrowed by vcvtneps2bf16, round to nearest even as c10::BFloat16).
FASTSR_INLINE vec vload(const float* p) { return _mm512_loadu_ps(p); }
FASTSR_INLINE vec vload(const bf16_t* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
FASTSR_INLINE void vstore(float* p, vec v) { _mm512_storeu_ps(p, v); }
FASTSR_INLINE void vstore(bf16_t* p, vec v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
}
FASTSR_INLINE vec vadd(vec a, vec b) { return _mm512_add_ps(a, b); }
FASTSR_INLINE vec vsub(vec a, vec b) { return _mm512_sub_ps(a, b); }
FASTSR_INLINE vec vmax(vec a, vec b) { return _mm512_max_ps(a, b); }
FASTSR_INLINE vec vmul(vec a, vec b) { return _mm512_mul_ps(a, b); }
FASTSR_INLINE vec vfmadd(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
FASTSR_INLINE vec vzero() { return _mm512_setzero_ps(); }
FASTSR_INLINE vec vset1(float a) { return _mm512_set1_ps(a); }
FASTSR_INLINE vec vleaky(vec v, vec slope) {
  return _mm512_mask_mul_ps(v, _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LE_OQ), v, slope);
}

// m[r][k0 .. k0 + 16 NV) = sum_c v[r][c] u[c][k] for R <= kRows rows, fp32 accumulation.
template <int R, int NV>
FASTSR_INLINE void micro(const bf16_t* v, int64_t C, const bf16_t* u, int64_t K, int64_t k0, float* m) {
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
FASTSR_INLINE void micro(const float* v, int64_t C, const float* u, int64_t K, int64_t k0, float* m) {
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

#include "winograd_kernels.h"

}  // namespace avx512
#pragma GCC pop_options

// ================================================================ AVX2 + FMA (fp32 only)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {

using vec = __m256;
constexpr int kLanes = 8;
constexpr int kMaxCols = 2;  // 6 x 16 micro-kernel: 12 accumulators of the 16 ymm registers

FASTSR_INLINE vec vload(const float* p) { return _mm256_loadu_ps(p); }
FASTSR_INLINE void vstore(float* p, vec v) { _mm256_storeu_ps(p, v); }
FASTSR_INLINE vec vadd(vec a, vec b) { return _mm256_add_ps(a, b); }
FASTSR_INLINE vec vsub(vec a, vec b) { return _mm256_sub_ps(a, b); }
FASTSR_INLINE vec vmax(vec a, vec b) { return _mm256_max_ps(a, b); }
FASTSR_INLINE vec vmul(vec a, vec b) { return _mm256_mul_ps(a, b); }
FASTSR_INLINE vec vfmadd(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
FASTSR_INLINE vec vzero() { return _mm256_setzero_ps(); }
FASTSR_INLINE vec vset1(float a) { return _mm256_set1_ps(a); }
FASTSR_INLINE vec vleaky(vec v, vec slope) {
  return _mm256_blendv_ps(v, _mm256_mul_ps(v, slope), _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LE_OQ));
}

// m[r][k0 .. k0 + 8 NV) = sum_c v[r][c] u[c][k] for R <= kRows rows.
template <int R, int NV>
FASTSR_INLINE void micro(const float* v, int64_t C, const float* u, int64_t K, int64_t k0, float* m) {
  __m256 acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    __m256 w[NV];
    for (int j = 0; j < NV; ++j) w[j] = _mm256_loadu_ps(u + c * K + k0 + 8 * j);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(v + r * C + c);
      for (int j = 0; j < NV; ++j) acc[r][j] = _mm256_fmadd_ps(a, w[j], acc[r][j]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < NV; ++j) _mm256_storeu_ps(m + r * K + k0 + 8 * j, acc[r][j]);
}

#include "winograd_kernels.h"

}  // namespace avx2
#pragma GCC pop_options

// ---------------------------------------------------------------- driver
template <typename T>
using BlockFn = void (*)(const T*, const T*, const T*, const Geometry&, const Epilogue&, const T*, int64_t, int64_t,
                         int64_t, int64_t, T*, float*, T*);

// The fp32 body for this CPU and output tile: AVX-512 where present, else AVX2.
// FASTSR_WINOGRAD_ISA=avx2 picks the AVX2 body on an AVX-512 CPU too (both bodies are then
// testable on one machine).
bool avx512_body() {
  const char* isa = std::getenv("FASTSR_WINOGRAD_ISA");
  return cpu_has_avx512() && !(isa != nullptr && std::string(isa) == "avx2");
}

BlockFn<float> float_block(int tile) {
  const bool avx512 = avx512_body();
  if (tile == 4) return avx512 ? &avx512::process_block<float, 4> : &avx2::process_block<float, 4>;
  return avx512 ? &avx512::process_block<float, 2> : &avx2::process_block<float, 2>;
}

template <typename T>
void run(BlockFn<T> block, int tile, const T* x, const T* u, const Geometry& g, const Epilogue& e, const T* res,
         T* y) {
  const int64_t blocks_per_row = (g.Wt + kBlockTiles - 1) / kBlockTiles;
  const int64_t units = g.N * g.Ht * blocks_per_row;
  const int64_t components = (tile + 2) * (tile + 2);
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> V(components * kBlockTiles * g.C), zeros(g.C);
    std::vector<float> M(components * kBlockTiles * g.K);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n = unit / (g.Ht * blocks_per_row), rem = unit % (g.Ht * blocks_per_row);
      const int64_t ty = rem / blocks_per_row, tx0 = (rem % blocks_per_row) * kBlockTiles;
      block(x, zeros.data(), u, g, e, res, n, ty, tx0, std::min<int64_t>(kBlockTiles, g.Wt - tx0), V.data(),
            M.data(), y);
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
  // fp32: (16 | 36, C, K), F(2x2, 3x3) or F(4x4, 3x3); bf16: (16, C / 2, K, 2), F(2x2, 3x3) only
  TORCH_CHECK_VALUE(u.is_contiguous() && (bf16 ? (u.dim() == 4 && u.size(0) == 16 && u.size(1) * 2 == C &&
                                                  u.size(3) == 2)
                                               : (u.dim() == 3 && (u.size(0) == 16 || u.size(0) == 36) &&
                                                  u.size(1) == C)),
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
  TORCH_CHECK(bf16 ? cpu_has_avx512bf16() : cpu_has_avx512() || cpu_has_avx2(), kOp, ": this CPU lacks ",
              bf16 ? "AVX512-BF16" : "AVX-512 and AVX2 + FMA", " (fastsr.ops.winograd_supported says where it runs)");
}

at::Tensor winograd_conv3x3_cpu(const at::Tensor& x, const at::Tensor& u, const c10::optional<at::Tensor>& bias,
                                int64_t act, double slope, const c10::optional<at::Tensor>& prelu,
                                const c10::optional<at::Tensor>& residual_in) {
  check_args(x, u, bias, act, prelu, residual_in);
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = u.size(2);
  const int tile = u.size(0) == 36 ? 4 : 2;  // output tile side: F(tile x tile, 3x3)
  const Geometry g{N, H, W, C, K, (H + tile - 1) / tile, (W + tile - 1) / tile};
  at::Tensor y = at::empty({N, K, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  if (y.numel() == 0) return y;
  at::Tensor res;
  if (residual_in.has_value()) res = residual_in->contiguous(at::MemoryFormat::ChannelsLast);
  const Epilogue e{bias.has_value() ? bias->contiguous().data_ptr<float>() : nullptr,
                   prelu.has_value() ? prelu->contiguous().data_ptr<float>() : nullptr,
                   static_cast<float>(slope), act};
  if (x.scalar_type() == at::kBFloat16) {
    run<bf16_t>(&avx512::process_block<bf16_t, 2>, tile, ptr<at::BFloat16>(x), ptr<at::BFloat16>(u), g, e,
                res.defined() ? ptr<at::BFloat16>(res) : nullptr, ptr<at::BFloat16>(y));
  } else {
    run<float>(float_block(tile), tile, x.data_ptr<float>(), u.data_ptr<float>(), g, e,
               res.defined() ? res.data_ptr<float>() : nullptr, y.data_ptr<float>());
  }
  return y;
}

// ---------------------------------------------------------------- weight gradient (fp32)
constexpr const char* kWgradOp = "fastsr::winograd_conv3x3_wgrad";

using WgradFn = void (*)(const float*, const float*, const float*, const Geometry&, int64_t, int64_t, int64_t,
                         float*, float*, float*);

WgradFn wgrad_block_fn(int tile) {
  const bool avx512 = avx512_body();
  if (tile == 4) return avx512 ? &avx512::wgrad_block<4> : &avx2::wgrad_block<4>;
  return avx512 ? &avx512::wgrad_block<2> : &avx2::wgrad_block<2>;
}

// dU ((tile + 2)^2, C, K), float32: the Winograd-domain weight gradient of the 3x3 convolution
// (padding 1) of x (N, C, H, W) whose output gradient is grad (N, K, H, W), both fp32
// channels_last; fastsr/ops/winograd.py turns it into dW = G^T dU G. Each thread accumulates
// its own dU over its blocks of tiles; the threads' sums are added at the end.
at::Tensor winograd_conv3x3_wgrad_cpu(const at::Tensor& x, const at::Tensor& grad, int64_t tile) {
  check_activation(x, c10::DeviceType::CPU, kWgradOp, "x");
  check_activation(grad, c10::DeviceType::CPU, kWgradOp, "grad");
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat && grad.scalar_type() == at::kFloat, kWgradOp,
                   ": x and grad must be float32, got ", x.scalar_type(), " and ", grad.scalar_type());
  TORCH_CHECK_VALUE(x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                    grad.is_contiguous(at::MemoryFormat::ChannelsLast), kWgradOp,
                    ": x and grad must be channels_last");
  TORCH_CHECK_VALUE(grad.size(0) == x.size(0) && grad.size(2) == x.size(2) && grad.size(3) == x.size(3), kWgradOp,
                    ": grad must be (N, K, H, W) of x's N, H, W ", x.sizes(), ", got ", grad.sizes());
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), K = grad.size(1);
  TORCH_CHECK_VALUE(C % 16 == 0 && C > 0 && K % 16 == 0 && K > 0, kWgradOp,
                    ": channel counts must be multiples of 16, got C ", C, " and K ", K);
  TORCH_CHECK_VALUE(tile == 2 || tile == 4, kWgradOp, ": tile must be 2 or 4, got ", tile);
  TORCH_CHECK(cpu_has_avx512() || cpu_has_avx2(), kWgradOp, ": this CPU lacks AVX-512 and AVX2 + FMA");
  const int64_t components = (tile + 2) * (tile + 2);
  at::Tensor du = at::zeros({components, C, K}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (x.numel() == 0) return du;
  const Geometry g{N, H, W, C, K, (H + tile - 1) / tile, (W + tile - 1) / tile};
  const int64_t per_image = g.Ht * g.Wt, blocks_per_image = (per_image + kBlockTiles - 1) / kBlockTiles;
  const int64_t units = N * blocks_per_image;
  const WgradFn block = wgrad_block_fn(static_cast<int>(tile));
  const float* xp = x.data_ptr<float>();
  const float* dy = grad.data_ptr<float>();
  const int threads = at::get_num_threads();
  std::vector<std::vector<float>> partial(threads);
  at::parallel_for(0, units, 1, [&](int64_t begin, int64_t end) {
    std::vector<float>& acc = partial[at::get_thread_num()];
    if (acc.empty()) acc.assign(components * C * K, 0.0f);
    std::vector<float> V(components * kBlockTiles * C), M(components * kBlockTiles * K), zeros(C);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t n = unit / blocks_per_image, first = (unit % blocks_per_image) * kBlockTiles;
      block(xp, zeros.data(), dy, g, n, first, std::min<int64_t>(kBlockTiles, per_image - first), V.data(), M.data(),
            acc.data());
    }
  });
  float* out = du.data_ptr<float>();
  for (const auto& acc : partial) {
    if (acc.empty()) continue;
    at::parallel_for(0, components * C * K, 1 << 14, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[i] += acc[i];
    });
  }
  return du;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastsr, CPU, m) {
  m.impl("winograd_conv3x3", &winograd_conv3x3_cpu);
  m.impl("winograd_conv3x3_wgrad", &winograd_conv3x3_wgrad_cpu);
}

}  // namespace fastsr
