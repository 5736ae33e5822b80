// Autograd of fastsr::bias_residual, in C++ (see autograd/bias_prelu.cpp for why).
//   dresidual = g;  dx = scale * g (g itself when scale == 1);  dbias = scale * sum g
#include "autograd/common.h"

#include <ATen/ATen.h>

#include <torch/library.h>

namespace fastsr {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class BiasResidual : public torch::autograd::Function<BiasResidual> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& bias,
                            const at::Tensor& residual, double scale) {
    static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>(
        "fastsr::bias_residual");
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->save_for_backward({bias});
    ctx->saved_data["scale"] = scale;
    return op.call(x, bias, residual, scale);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto sum_op = op_handle<at::Tensor(const at::Tensor&, double, at::ScalarType)>(
        "fastsr::channel_sum");
    static auto bwd_op = op_handle<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double)>(
        "fastsr::bias_residual_backward");
    const at::Tensor& g = grads[0];
    if (!g.defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const at::Tensor bias = ctx->get_saved_variables()[0];
    const double scale = ctx->saved_data["scale"].toDouble();
    if (at::GradMode::is_enabled()) {
      // create_graph=True: the reduction kernels are constants to autograd, so compute the
      // gradients with differentiable ATen ops (the backward of bias_residual_reference).
      const auto acc = g.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
      const at::Tensor dbias = (g.to(acc).sum({0, 2, 3}) * scale).to(bias.scalar_type());
      return {scale == 1.0 ? g : (g.to(acc) * scale).to(g.scalar_type()), dbias, g, at::Tensor()};
    }
    if (scale == 1.0) {
      // dx is g itself: only the per-channel reduction is left.
      at::Tensor dbias = ctx->needs_input_grad(1) ? sum_op.call(g, 1.0, bias.scalar_type()) : at::Tensor();
      return {g, dbias, g, at::Tensor()};
    }
    auto [dx, dbias] = bwd_op.call(g, bias, scale);
    return {dx, dbias, g, at::Tensor()};
  }
};

at::Tensor bias_residual_autograd(const at::Tensor& x, const at::Tensor& bias,
                                  const at::Tensor& residual, double scale) {
  if (!records_graph(x, bias, residual)) {
    static auto op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>(
        "fastsr::bias_residual");
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(x, bias, residual, scale);
  }
  return BiasResidual::apply(x, bias, residual, scale);
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, Autograd, m) { m.impl("bias_residual", &fastsr::bias_residual_autograd); }
