// Argument checks shared by the CPU and CUDA kernels, run before any memory is touched.
// Each raises the Python exception that fastsr/ops/_common.py raises for the same mistake
// (TORCH_CHECK_VALUE -> ValueError, TORCH_CHECK_TYPE -> TypeError) and names the op and the
// argument. `dev` is the device type of the kernel doing the check: a kernel is picked by
// the dispatcher from all tensor arguments, so a CUDA kernel can receive a CPU bias and
// must say so rather than read host memory from the device.
#pragma once

#include <ATen/ATen.h>

namespace fastsr {

inline const char* device_name(c10::DeviceType dev) {
  return dev == c10::DeviceType::CUDA ? "CUDA" : "CPU";
}

inline void check_device(const at::Tensor& t, c10::DeviceType dev, const char* op, const char* arg) {
  TORCH_CHECK_VALUE(t.device().type() == dev, op, ": ", arg, " must be a ", device_name(dev),
                    " tensor, got device ", t.device());
}

// The element types of the kernels: float32, bfloat16 and float64 (gradcheck) on both
// devices, float16 on CUDA (fp32 accumulation for the 16-bit types).
inline void check_float_dtype(const at::Tensor& t, c10::DeviceType dev, const char* op,
                              const char* arg) {
  const auto dt = t.scalar_type();
  if (dev == c10::DeviceType::CUDA) {
    TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf || dt == at::kDouble,
                     op, ": ", arg, " must be float32, bfloat16, float16 or float64 on CUDA, got ", dt);
  } else {
    TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kDouble, op, ": ", arg,
                     " must be float32, bfloat16 or float64 on CPU, got ", dt);
  }
}

// An (N, C, H, W) activation on the kernel's device, of a kernel dtype.
inline void check_activation(const at::Tensor& x, c10::DeviceType dev, const char* op,
                             const char* arg) {
  check_device(x, dev, op, arg);
  check_float_dtype(x, dev, op, arg);
  TORCH_CHECK_VALUE(x.dim() == 4, op, ": ", arg, " must be a 4-D (N, C, H, W) tensor, got ",
                    x.dim(), "-D with shape ", x.sizes());
}

// A per-channel parameter: 1-D, `channels` elements (default -1: the channels of x; or 1
// when `allow_shared`), on x's device, float32 or the activation's dtype.
inline void check_channel_param(const at::Tensor& p, const at::Tensor& x, bool allow_shared,
                                const char* op, const char* arg, int64_t channels = -1) {
  TORCH_CHECK_VALUE(p.device() == x.device(), op, ": ", arg, " must be on the device of x (",
                    x.device(), "), got ", p.device());
  const int64_t C = channels < 0 ? x.size(1) : channels;
  const char* what = channels < 0 ? " (= channels of x)" : " (= channels of the output)";
  TORCH_CHECK_VALUE(p.dim() == 1 && (p.size(0) == C || (allow_shared && p.size(0) == 1)), op,
                    ": ", arg, " must be 1-D with ", C, what, allow_shared ? " or 1" : "",
                    " elements, got shape ", p.sizes());
  TORCH_CHECK_TYPE(p.scalar_type() == x.scalar_type() || p.scalar_type() == at::kFloat, op, ": ",
                   arg, " must have the dtype of x (", x.scalar_type(), ") or float32, got ",
                   p.scalar_type());
}

// `t` has the device, shape and dtype of `x`.
inline void check_same_as(const at::Tensor& t, const at::Tensor& x, const char* op,
                          const char* arg, const char* xname) {
  TORCH_CHECK_VALUE(t.device() == x.device(), op, ": ", arg, " must be on the device of ", xname,
                    " (", x.device(), "), got ", t.device());
  TORCH_CHECK_VALUE(t.sizes() == x.sizes(), op, ": ", arg, " must have the shape of ", xname, " ",
                    x.sizes(), ", got ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), op, ": ", arg, " must have the dtype of ",
                   xname, " (", x.scalar_type(), "), got ", t.scalar_type());
}

// The two layouts the kernels walk without copying. Anything else (a strided slice,
// a permuted view) is copied to NCHW first; that copy is the only hidden one.
enum class Layout { NCHW, NHWC };

inline Layout layout_of(const at::Tensor& x) {
  // A tensor that is both (e.g. H = W = 1, or C = 1) is walked as NCHW.
  if (x.is_contiguous()) return Layout::NCHW;
  if (x.is_contiguous(at::MemoryFormat::ChannelsLast)) return Layout::NHWC;
  return Layout::NCHW;
}

inline at::MemoryFormat memory_format(Layout l) {
  return l == Layout::NHWC ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// `t` in layout `l` (a no-op when it already is).
inline at::Tensor in_layout(const at::Tensor& t, Layout l) { return t.contiguous(memory_format(l)); }

}  // namespace fastsr
