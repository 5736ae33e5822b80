// Autograd of fastsr::ssim, in C++ (see autograd/bias_prelu.cpp for why: a Python
// register_autograd costs ~50 us a call, 3-5 % of a fwd+bwd at 16x3x96x96).
// The op's forward already returns d ssim[n] / d x[n] and d ssim[n] / d y[n] when asked
// (grad_x / grad_y), so the backward is a per-image scale by the incoming gradient:
//   dx[n] = grad[n] * dssim_dx[n]   (in the accumulation dtype, then cast to x's dtype)
#include "autograd/common.h"

#include <torch/library.h>

namespace fastsr {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class SSIM : public torch::autograd::Function<SSIM> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& y,
                               double data_range, int64_t window_size, double sigma, double k1,
                               double k2, bool grad_x, bool grad_y) {
    static auto op = op_handle<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, double, int64_t, double, double, double, bool, bool)>(
        "fastsr::ssim");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [value, dssim_dx, dssim_dy] =
        op.call(x, y, data_range, window_size, sigma, k1, k2, grad_x, grad_y);
    ctx->mark_non_differentiable({dssim_dx, dssim_dy});
    ctx->set_materialize_grads(false);  // no zero-filled gradients for the two outputs above
    ctx->save_for_backward({dssim_dx, dssim_dy});
    ctx->saved_data["grad_x"] = grad_x;
    ctx->saved_data["grad_y"] = grad_y;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    ctx->saved_data["y_dtype"] = static_cast<int64_t>(y.scalar_type());
    return {value, dssim_dx, dssim_dy};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(9);
    const at::Tensor& grad = grads[0];
    if (!grad.defined()) return out;  // the SSIM value did not reach the loss
    // The saved gradient is a constant to autograd: a create_graph backward would give a
    // silently wrong second derivative, so refuse it.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "fastsr::ssim supports first-order gradients only; backward with create_graph=True "
                "(double backward) is not implemented -- use fastsr.ops.ssim(..., impl=\"reference\") "
                "for higher-order gradients");
    const bool need_x = ctx->needs_input_grad(0), need_y = ctx->needs_input_grad(1);
    const bool grad_x = ctx->saved_data["grad_x"].toBool(), grad_y = ctx->saved_data["grad_y"].toBool();
    TORCH_CHECK((!need_x || grad_x) && (!need_y || grad_y),
                "fastsr::ssim was called with grad_x/grad_y = ", grad_x, "/", grad_y,
                ", so it computed no gradient for the input that now needs one; call "
                "fastsr.ops.ssim, which sets them from requires_grad");
    const auto saved = ctx->get_saved_variables();
    auto scale = [&](const at::Tensor& d, const char* key) {
      const auto dtype = static_cast<at::ScalarType>(ctx->saved_data[key].toInt());
      const at::Tensor s = grad.to(d.scalar_type()).view({-1, 1, 1, 1});
      return at::mul(d, s).to(dtype);
    };
    if (need_x) out[0] = scale(saved[0], "x_dtype");
    if (need_y) out[1] = scale(saved[1], "y_dtype");
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> ssim_autograd(const at::Tensor& x, const at::Tensor& y,
                                                             double data_range, int64_t window_size,
                                                             double sigma, double k1, double k2,
                                                             bool grad_x, bool grad_y) {
  auto out = SSIM::apply(x, y, data_range, window_size, sigma, k1, k2, grad_x, grad_y);
  return {out[0], out[1], out[2]};
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, Autograd, m) { m.impl("ssim", &fastsr::ssim_autograd); }
