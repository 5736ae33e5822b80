// The argument checks of each op family, shared by its CPU and CUDA kernels so that both
// raise the same error for the same mistake (`dev` is the kernel's device type). Each runs
// before any memory is touched; size products are proven to fit int64 first.
#pragma once

#include <array>
#include <cmath>
#include <optional>
#include <string>
#include <string_view>

#include "checks.h"
#include "size_checks.h"

namespace fastsr {

// ---- bias_prelu ---------------------------------------------------------------------------
inline void check_bias_prelu_args(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& weight,
                                  c10::DeviceType dev, const char* op) {
  check_activation(x, dev, op, "x");
  check_size_products(x, op, "x");
  check_channel_param(bias, x, /*allow_shared=*/false, op, "bias");
  check_channel_param(weight, x, /*allow_shared=*/true, op, "weight");
}

// ---- bias_residual / channel_sum -----------------------------------------------------------
inline void check_scale(double scale, const char* op) {
  TORCH_CHECK_VALUE(std::isfinite(scale), op, ": scale must be finite, got ", scale);
}

inline void check_bias_residual_args(const at::Tensor& x, const at::Tensor& bias,
                                     const at::Tensor& residual, double scale, c10::DeviceType dev,
                                     const char* op) {
  check_activation(x, dev, op, "x");
  check_size_products(x, op, "x");
  check_channel_param(bias, x, /*allow_shared=*/false, op, "bias");
  check_same_as(residual, x, op, "residual", "x");
  check_scale(scale, op);
}

// grad of bias_residual_backward, x of channel_sum: an activation, its bias (when given).
inline void check_channel_sum_args(const at::Tensor& g, const char* arg, double scale,
                                   c10::DeviceType dev, const char* op) {
  check_activation(g, dev, op, arg);
  check_size_products(g, op, arg);
  check_scale(scale, op);
}

// ---- pixel_shuffle_prelu ------------------------------------------------------------------
// Every size product the op forms -- r*r, H*r, W*r and the output's element count and
// strides -- is checked for int64 overflow before any of them is used (an r*r that wraps
// to 0 would divide by zero; a wrapped output size would under-allocate).
inline void check_pixel_shuffle_prelu_args(const at::Tensor& x, const at::Tensor& weight, int64_t r,
                                           c10::DeviceType dev, const char* op) {
  check_activation(x, dev, op, "x");
  TORCH_CHECK_VALUE(r >= 1, op, ": upscale_factor must be an integer >= 1, got ", r);
  check_size_products(x, op, "x");
  const auto r2 = mul_checked(r, r);
  const auto hr = mul_checked(x.size(2), r), wr = mul_checked(x.size(3), r);
  const bool fits = r2 && hr && wr &&
                    sizes_fit(std::array<int64_t, 4>{x.size(0), x.size(1) / *r2, *hr, *wr});
  TORCH_CHECK_VALUE(fits, op, ": upscale_factor ", r, " is too large for x of shape ", x.sizes(),
                    ": the output sizes (N, C / r**2, H * r, W * r) would overflow int64");
  TORCH_CHECK_VALUE(x.size(1) % (r * r) == 0, op, ": channels of x (", x.size(1),
                    ") must be divisible by upscale_factor**2 (", r * r, ")");
  check_channel_param(weight, x, /*allow_shared=*/true, op, "weight", x.size(1) / (r * r));
}

// The incoming gradient of pixel_shuffle_prelu_backward has the output's shape and x's dtype.
inline void check_pixel_shuffle_prelu_grad(const at::Tensor& grad, const at::Tensor& x, int64_t r,
                                           c10::DeviceType dev, const char* op) {
  const int64_t N = x.size(0), C = x.size(1) / (r * r), H = x.size(2), W = x.size(3);
  check_device(grad, dev, op, "grad");
  TORCH_CHECK_VALUE(grad.device() == x.device(), op, ": grad must be on the device of x (",
                    x.device(), "), got ", grad.device());
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == N && grad.size(1) == C &&
                        grad.size(2) == H * r && grad.size(3) == W * r,
                    op, ": grad must have the output shape [", N, ", ", C, ", ", H * r, ", ", W * r,
                    "], got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == x.scalar_type(), op, ": grad must have the dtype of x (",
                   x.scalar_type(), "), got ", grad.scalar_type());
}

// ---- l1_loss ------------------------------------------------------------------------------
enum class Reduction { Mean, Sum, None };

inline Reduction parse_reduction(std::string_view r, const char* op) {
  if (r == "mean") return Reduction::Mean;
  if (r == "sum") return Reduction::Sum;
  TORCH_CHECK_VALUE(r == "none", op, ": reduction must be 'mean', 'sum' or 'none', got '",
                    std::string(r), "'");
  return Reduction::None;
}

// The layout the kernels walk as flat memory: channels_last for a 4-D channels_last tensor
// (that is not also contiguous), else contiguous (anything else is copied to it). Both
// operands and all outputs use it (fastsr.ops._common.output_format is the same rule).
inline at::MemoryFormat flat_format(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast)
             ? at::MemoryFormat::ChannelsLast
             : at::MemoryFormat::Contiguous;
}

inline void check_l1_loss_args(const at::Tensor& input, const at::Tensor& target,
                               std::optional<double> eps, c10::DeviceType dev, const char* op) {
  check_device(input, dev, op, "input");
  check_float_dtype(input, dev, op, "input");
  check_size_products(input, op, "input");
  check_same_as(target, input, op, "target", "input");
  TORCH_CHECK_VALUE(!eps.has_value() || (std::isfinite(*eps) && *eps > 0), op,
                    ": eps must be None (L1) or a finite number > 0 (Charbonnier), got ", *eps);
}

inline void check_l1_loss_backward_args(const at::Tensor& grad_loss, const at::Tensor& grad_buf,
                                        c10::DeviceType dev, const char* op) {
  check_device(grad_buf, dev, op, "grad_buf");
  check_float_dtype(grad_buf, dev, op, "grad_buf");
  TORCH_CHECK_VALUE(grad_loss.device() == grad_buf.device(), op,
                    ": grad_loss must be on the device of grad_buf (", grad_buf.device(), "), got ",
                    grad_loss.device());
  TORCH_CHECK_TYPE(grad_loss.scalar_type() == grad_buf.scalar_type(), op,
                   ": grad_loss must have the dtype of grad_buf (", grad_buf.scalar_type(), "), got ",
                   grad_loss.scalar_type());
  TORCH_CHECK_VALUE(grad_loss.dim() == 0 || grad_loss.sizes() == grad_buf.sizes(), op,
                    ": grad_loss must be 0-D (reduction mean/sum) or have the shape of grad_buf ",
                    grad_buf.sizes(), " (reduction none), got ", grad_loss.sizes());
}

}  // namespace fastsr
