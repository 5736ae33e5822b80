// Autograd of fastsr::bias_prelu, in C++ so that a forward+backward costs no Python
// (a Python-registered autograd formula adds ~50 us per call, more than the kernels take
// at 16x64x24x24). Registered for the Autograd key: it serves every device.
#include "autograd/common.h"

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
    auto [dx, dbias, dweight] = op.call(grads[0], saved[0], saved[1], saved[2]);
    return {dx, dbias, dweight};
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
