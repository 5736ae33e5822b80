// Autograd of fastsr::pixel_shuffle_prelu, in C++ (see autograd/bias_prelu.cpp for why):
//   (dx, dweight) = fastsr::pixel_shuffle_prelu_backward(g, x, weight, r)
// The backward op goes through the dispatcher: C++ on CPU, Triton on CUDA, fake when traced.
#include "autograd/common.h"

#include <ATen/ATen.h>

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
    // create_graph=True: the fused backward kernel is a constant to autograd, so compute
    // the gradients with differentiable ATen ops that autograd records (double backward).
    if (at::GradMode::is_enabled()) return differentiable_backward(grads[0], saved[0], saved[1], r);
    auto [dx, dweight] = op.call(grads[0], saved[0], saved[1], r);
    return {dx, dweight, at::Tensor()};
  }

  // The backward of pixel_shuffle_prelu_reference, term by term (v = PixelShuffle(x) in the
  // accumulation dtype):  dx = PixelUnshuffle(g if v > 0 else weight * g);
  // dweight = sum_{n,h,w: v <= 0} g * v  (also over c for a shared weight). The shuffle is
  // written as reshape / permute, which (unlike at::pixel_shuffle's backward) also accepts
  // zero-size tensors.
  static variable_list differentiable_backward(const at::Tensor& grad, const at::Tensor& x,
                                               const at::Tensor& weight, int64_t r) {
    const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const int64_t N = x.size(0), C = x.size(1) / (r * r), H = x.size(2), W = x.size(3);
    const at::Tensor g = grad.to(acc);
    const at::Tensor v =
        x.to(acc).reshape({N, C, r, r, H, W}).permute({0, 1, 4, 2, 5, 3}).reshape({N, C, H * r, W * r});
    const at::Tensor pos = v > 0;
    const at::Tensor dv = at::where(pos, g, weight.to(acc).view({1, -1, 1, 1}) * g);
    const at::Tensor dx =
        dv.reshape({N, C, H, r, W, r}).permute({0, 1, 3, 5, 2, 4}).reshape({N, C * r * r, H, W});
    const at::Tensor dw_terms = at::where(pos, at::zeros_like(g), g * v);
    at::Tensor dweight = weight.size(0) == 1 ? dw_terms.sum().reshape({1}) : dw_terms.sum({0, 2, 3});
    return {dx.to(x.scalar_type()), dweight.to(weight.scalar_type()), at::Tensor()};
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
