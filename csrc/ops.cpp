// The schemas of every fastsr op, in one place. Kernels register implementations for
// these names per dispatch key: CPU in csrc/cpu/<family>.cpp, CUDA in csrc/cuda/<family>.cu
// (when built with CUDA; kernels/<family>.py registers Triton launchers from Python for the
// families without one), Autograd in csrc/autograd/<family>.cpp,
// and the fake implementations from Python (fastsr/ops/<family>.py).
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(fastsr, m) {
  // --- conv epilogues (csrc/cpu/bias_prelu.cpp, csrc/cpu/bias_residual.cpp) -----------
  // y = PReLU(x + bias[c]; weight[c or 0])
  m.def("bias_prelu(Tensor x, Tensor bias, Tensor weight) -> Tensor");
  // (dx, dbias, dweight)
  m.def("bias_prelu_backward(Tensor grad, Tensor x, Tensor bias, Tensor weight) -> (Tensor, Tensor, Tensor)");
  // y = residual + scale * (x + bias[c])
  m.def("bias_residual(Tensor x, Tensor bias, Tensor residual, float scale) -> Tensor");
  // (dx = scale * grad, dbias = scale * sum_{n,h,w} grad)
  m.def("bias_residual_backward(Tensor grad, Tensor bias, float scale) -> (Tensor, Tensor)");
  // out[c] = scale * sum_{n,h,w} x[n,c,h,w], in `dtype` (the bias gradient when scale == 1
  // lets dx alias grad, so only the reduction is left)
  m.def("channel_sum(Tensor x, float scale, ScalarType dtype) -> Tensor");

  // --- SSIM (csrc/cpu/ssim.cpp, kernels/ssim.py) ----------------------------------------
  // (per-image SSIM (N,) in x's dtype; with grad_x / grad_y also d ssim[n] / d x[n] and
  // d ssim[n] / d y[n] (N, C, H, W) in the accumulation dtype and the layout of x / y,
  // computed in the same pass -- the backward is a scale; a gradient not asked for is an
  // empty (0,) tensor)
  m.def("ssim(Tensor x, Tensor y, float data_range, int window_size, float sigma, float k1, "
        "float k2, bool grad_x, bool grad_y) -> (Tensor, Tensor, Tensor)");

  // --- PixelShuffle + PReLU, L1 / Charbonnier loss -----------------------------------------
  // (csrc/cpu/pixel_shuffle_prelu.cpp, csrc/cpu/l1_loss.cpp)
  // y[n, c, h*r+i, w*r+j] = PReLU(x[n, c*r*r + i*r + j, h, w]; weight[c or 0]), r = upscale_factor
  m.def("pixel_shuffle_prelu(Tensor x, Tensor weight, int upscale_factor) -> Tensor");
  // (dx, dweight)
  m.def("pixel_shuffle_prelu_backward(Tensor grad, Tensor x, Tensor weight, int upscale_factor) -> (Tensor, Tensor)");
  // (loss, grad_buf): loss reduced by reduction ('mean' | 'sum' | 'none'); |d| or, with eps,
  // sqrt(d^2 + eps^2), d = input - target; grad_buf = d loss / d input when compute_grad
  // (else an empty (0,) tensor), so the backward is a scale of it.
  // --- 3x3 convolution + epilogue by Winograd F(2x2, 3x3), inference (csrc/cpu/winograd.cpp)
  // y = act(conv3x3(x) + bias) + residual; weight transformed by fastsr.ops.winograd_weight;
  // act 0 none, 1 relu, 2 leaky_relu(slope), 3 prelu(prelu_weight)
  m.def("winograd_conv3x3(Tensor x, Tensor weight, Tensor? bias, int act, float slope, Tensor? prelu_weight, "
        "Tensor? residual) -> Tensor");
  // its weight gradient in the Winograd domain, float32: dU ((tile + 2)^2, C, K) of x (N, C, H, W)
  // and the output gradient grad (N, K, H, W), both channels_last; dW = G^T dU G
  m.def("winograd_conv3x3_wgrad(Tensor x, Tensor grad, int tile) -> Tensor");
  m.def("l1_loss(Tensor input, Tensor target, str reduction, float? eps, bool compute_grad) -> (Tensor, Tensor)");
  // grad_buf * grad_loss (grad_loss 0-D, or elementwise for reduction 'none')
  m.def("l1_loss_backward(Tensor grad_loss, Tensor grad_buf) -> Tensor");
}

// fastsr._C is a Python extension module only so that `import fastsr._C` loads this
// library and runs the registrations above; it exports no Python functions.
static struct PyModuleDef fastsr_module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&fastsr_module); }
