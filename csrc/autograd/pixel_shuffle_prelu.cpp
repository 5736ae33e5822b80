// Autograd of fastsr::pixel_shuffle_prelu, in C++ (see autograd/bias_prelu.cpp for why):
//   (dx, dweight) = fastsr::pixel_shuffle_prelu_backward(g, x, weight, r)
// The backward op goes through the dispatcher: C++ on CPU, Triton on CUDA, fake when traced.
#include "autograd/common.h"

#include <torch/library.h>

namespace fastsr {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PixelShufflePReLU : public torch::autograd::Function<PixelShufflePReLU> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                            int64_t upscale_factor) {
    static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
        "fastsr::pixel_shuffle_prelu");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, weight});
    ctx->saved_data["upscale_factor"] = upscale_factor;
    return op.call(x, weight, upscale_factor);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = op_handle<std::tuple<at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>(
        "fastsr::pixel_shuffle_prelu_backward");
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const auto saved = ctx->get_saved_variables();
    const int64_t r = ctx->saved_data["upscale_factor"].toInt();
    auto [dx, dweight] = op.call(grads[0], saved[0], saved[1], r);
    return {dx, dweight, at::Tensor()};
  }
};

at::Tensor pixel_shuffle_prelu_autograd(const at::Tensor& x, const at::Tensor& weight,
                                        int64_t upscale_factor) {
  if (!records_graph(x, weight)) {
    static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t)>(
        "fastsr::pixel_shuffle_prelu");
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(x, weight, upscale_factor);
  }
  return PixelShufflePReLU::apply(x, weight, upscale_factor);
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, Autograd, m) {
  m.impl("pixel_shuffle_prelu", &fastsr::pixel_shuffle_prelu_autograd);
}
