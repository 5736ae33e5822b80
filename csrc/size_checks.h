// Overflow-checked size arithmetic for the argument checks of the CPU and CUDA kernels.
//
// A tensor's sizes can multiply past int64 even though the tensor exists: a zero-size view
// expanded with stride 0 (e.g. (1, 0, 2^40, 2^40)) has numel 0 while H * W is 2^80. The
// kernels form such products (H * W, N * H * W, the output sizes of a shuffle) before they
// look at numel, so the checks prove that every product of sizes fits first -- a signed
// overflow is undefined behaviour and a wrapped size under-allocates or divides by zero.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/safe_numerics.h>

#include <algorithm>
#include <optional>

namespace fastsr {

// a * b, or nullopt when it overflows int64.
inline std::optional<int64_t> mul_checked(int64_t a, int64_t b) {
  int64_t out = 0;
  if (c10::mul_overflows(a, b, &out)) return std::nullopt;
  return out;
}

// True when the product of `sizes`, each clamped to >= 1, fits int64. Clamping makes it an
// upper bound of every partial product the kernels form (and of the contiguous strides).
template <typename Sizes>
inline bool sizes_fit(const Sizes& sizes) {
  int64_t prod = 1;
  for (const int64_t s : sizes) {
    if (c10::mul_overflows(prod, std::max<int64_t>(s, 1), &prod)) return false;
  }
  return true;
}

// `t`'s sizes multiply (clamped to >= 1) within int64; ValueError naming `arg` otherwise.
inline void check_size_products(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK_VALUE(sizes_fit(t.sizes()), op, ": ", arg, " has sizes ", t.sizes(),
                    " whose product (zero sizes counted as 1) overflows int64");
}

}  // namespace fastsr
