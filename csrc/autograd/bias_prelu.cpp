// Autograd of fastsr::bias_prelu, in C++ so that a forward+backward costs no Python
// (a Python-registered autograd formula adds ~50 us per call, more than the kernels take
// at 16x64x24x24). Registered for the Autograd key: it serves every device.
#include "autograd/common.h"

#include <ATen/ATen.h>

#include <torch/library.h>

namespace fastsr {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class BiasPReLU : public torch::autograd::Function<BiasPReLU> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& bias,
                            const at::Tensor& weight) {
    static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
        "fastsr::bias_prelu");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({x, bias, weight});
    return op.call(x, bias, weight);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = op_handle<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
        "fastsr::bias_prelu_backward");
    const auto saved = ctx->get_saved_variables();
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    // create_graph=True: the fused backward kernel is a constant to autograd, so compute
    // the gradients with differentiable ATen ops that autograd records (double backward).
    if (at::GradMode::is_enabled()) return differentiable_backward(grads[0], saved[0], saved[1], saved[2]);
    auto [dx, dbias, dweight] = op.call(grads[0], saved[0], saved[1], saved[2]);
    return {dx, dbias, dweight};
  }

  // The backward of bias_prelu_reference, term by term (z = x + bias, in the accumulation
  // dtype):  dz = g if z > 0 else weight * g;  dx = dz;  dbias = sum_{n,h,w} dz;
  // dweight = sum_{n,h,w: z <= 0} g * z  (also over c for a shared weight).
  static variable_list differentiable_backward(const at::Tensor& grad, const at::Tensor& x,
                                               const at::Tensor& bias, const at::Tensor& weight) {
    const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const at::Tensor g = grad.to(acc);
    const at::Tensor z = x.to(acc) + bias.to(acc).view({1, -1, 1, 1});
    const at::Tensor pos = z > 0;
    const at::Tensor dz = at::where(pos, g, weight.to(acc).view({1, -1, 1, 1}) * g);
    const at::Tensor dw_terms = at::where(pos, at::zeros_like(g), g * z);
    at::Tensor dweight = weight.size(0) == 1 ? dw_terms.sum().reshape({1}) : dw_terms.sum({0, 2, 3});
    return {dz.to(x.scalar_type()), dz.sum({0, 2, 3}).to(bias.scalar_type()),
            dweight.to(weight.scalar_type())};
  }
};

at::Tensor bias_prelu_autograd(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& weight) {
  if (!records_graph(x, bias, weight)) {
    static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
        "fastsr::bias_prelu");
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(x, bias, weight);
  }
  return BiasPReLU::apply(x, bias, weight);
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, Autograd, m) { m.impl("bias_prelu", &fastsr::bias_prelu_autograd); }
