// Autograd of fastsr::l1_loss, in C++ (see autograd/bias_prelu.cpp for why: a Python
// register_autograd costs ~40-60 us a call, more than the op itself at training shapes).
// The forward op already returns grad_buf = s * dl/dd (s = 1/numel for 'mean', else 1) when
// compute_grad is set, so the backward is a scale:
//   dinput  = grad_buf * grad_loss   (grad_buf itself when grad_loss is the scalar 1, the
//                                      incoming gradient of a plain loss.backward())
//   dtarget = -dinput
// With create_graph=True the saved buffer is a constant to autograd, so the gradient is
// recomputed with differentiable ATen ops from input and target (the backward of
// fastsr.ops.l1_loss_reference), which autograd can differentiate again.
#include "autograd/common.h"

#include <ATen/ATen.h>

#include <optional>
#include <string>

#include <torch/library.h>

namespace fastsr {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

using ForwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      c10::string_view, std::optional<double>, bool);

std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& input, const at::Tensor& target,
                                                c10::string_view reduction,
                                                std::optional<double> eps, bool compute_grad) {
  static auto op = op_handle<ForwardSig>("fastsr::l1_loss");
  at::AutoDispatchBelowADInplaceOrView guard;
  return op.call(input, target, reduction, eps, compute_grad);
}

// Whether t is an ordinary dense CPU scalar equal to 1. Only such a tensor is read: a fake or
// functional tensor (torch.compile), a tensor subclass, a vmap wrapper or a lazy/conjugate
// view has no value to read here, and the backward then scales as usual.
bool is_plain_cpu_one(const at::Tensor& t) {
  if (t.dim() != 0 || !t.device().is_cpu() || t.layout() != at::kStrided) return false;
  const auto keys = t.key_set() - c10::autograd_dispatch_keyset_with_ADInplaceOrView -
                    c10::autocast_dispatch_keyset;
  if (keys != c10::DispatchKeySet(c10::DispatchKey::CPU)) return false;
  return t.item<double>() == 1.0;
}

class L1Loss : public torch::autograd::Function<L1Loss> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& target,
                               c10::string_view reduction, std::optional<double> eps,
                               bool compute_grad) {
    auto [loss, grad_buf] = call_forward(input, target, reduction, eps, compute_grad);
    ctx->mark_non_differentiable({grad_buf});
    // No zero-filled incoming gradient for grad_buf (an input-sized allocation per backward).
    ctx->set_materialize_grads(false);
    // The double backward recomputes d = input - target (references, not copies).
    if (compute_grad) {
      ctx->save_for_backward({grad_buf, input, target});
    } else {
      ctx->save_for_backward({grad_buf});
    }
    ctx->saved_data["compute_grad"] = compute_grad;
    ctx->saved_data["mean"] = reduction == "mean";
    if (eps.has_value()) ctx->saved_data["eps"] = *eps;
    return {loss, grad_buf};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd_op = op_handle<at::Tensor(const at::Tensor&, const at::Tensor&)>(
        "fastsr::l1_loss_backward");
    variable_list out(5);
    const at::Tensor& grad_loss = grads[0];
    if (!grad_loss.defined()) return out;  // the loss did not reach what is differentiated
    TORCH_CHECK(ctx->saved_data["compute_grad"].toBool(),
                "fastsr::l1_loss was called with compute_grad=False, so it has no gradient; "
                "call fastsr.ops.l1_loss, which sets it when input or target requires grad");
    const auto saved = ctx->get_saved_variables();
    at::Tensor dinput;
    if (at::GradMode::is_enabled()) {
      dinput = differentiable_backward(ctx, grad_loss, saved[1], saved[2]);
    } else if (is_plain_cpu_one(grad_loss)) {
      dinput = saved[0];  // the forward already computed it (Liger-Kernel style)
    } else {
      dinput = bwd_op.call(grad_loss, saved[0]);
    }
    if (ctx->needs_input_grad(1)) out[1] = at::neg(dinput);
    if (ctx->needs_input_grad(0)) out[0] = dinput;
    return out;
  }

  // d loss / d input as differentiable ATen ops, the backward of l1_loss_reference: dl/dd
  // (sign(d), or d / sqrt(d^2 + eps^2)) from d = input - target in the accumulation dtype,
  // times grad_loss (and 1 / numel for 'mean'), cast to input's dtype. Connected to input
  // and target as the reference's is (for L1 with derivative 0).
  static at::Tensor differentiable_backward(AutogradContext* ctx, const at::Tensor& grad_loss,
                                            const at::Tensor& input, const at::Tensor& target) {
    const auto acc = input.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    const at::Tensor d = input.to(acc) - target.to(acc);
    at::Tensor dl;
    if (ctx->saved_data.count("eps") != 0) {
      const double eps = ctx->saved_data["eps"].toDouble();
      dl = d / at::sqrt(d * d + eps * eps);
    } else {
      dl = at::sign(d);
    }
    at::Tensor g = grad_loss.to(acc);
    if (ctx->saved_data["mean"].toBool()) g = g / static_cast<double>(input.numel());
    return (dl * g).to(input.scalar_type());
  }
};

std::tuple<at::Tensor, at::Tensor> l1_loss_autograd(const at::Tensor& input, const at::Tensor& target,
                                                    c10::string_view reduction,
                                                    std::optional<double> eps, bool compute_grad) {
  if (!records_graph(input, target)) return call_forward(input, target, reduction, eps, compute_grad);
  auto out = L1Loss::apply(input, target, reduction, eps, compute_grad);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace fastsr

TORCH_LIBRARY_IMPL(fastsr, Autograd, m) { m.impl("l1_loss", &fastsr::l1_loss_autograd); }
