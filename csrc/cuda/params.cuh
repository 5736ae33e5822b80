// Per-channel parameters (bias, PReLU weight) as the CUDA kernels read them: float32 or the
// activation's dtype, one per channel or one shared, read in the accumulation type. Passing
// the pointer with a dtype flag (a warp-uniform branch) avoids a conversion launch per call.
#pragma once

#include "cuda/common.cuh"

namespace fastsr {
namespace cuda {

template <typename T>
struct ChannelParam {
  const void* ptr;
  bool is_f32;      // float32 storage, else T
  int64_t stride;   // 1 per channel, 0 when one value is shared by every channel

  static ChannelParam of(const at::Tensor& p) {
    return {p.data_ptr(), p.scalar_type() == at::kFloat, p.numel() == 1 ? 0 : 1};
  }

  template <typename I>
  __device__ __forceinline__ typename acc<T>::type operator[](I c) const {
    using A = typename acc<T>::type;
    const int64_t k = static_cast<int64_t>(c) * stride;
    return is_f32 ? static_cast<A>(static_cast<const float*>(ptr)[k])
                  : static_cast<A>(static_cast<const T*>(ptr)[k]);
  }
};

}  // namespace cuda
}  // namespace fastsr
