// Helpers for the C++ autograd kernels: typed handles to fastsr ops through the dispatcher,
// so the backward runs whichever kernel is registered for the device (C++ on CPU, the Triton
// launchers on CUDA, the fake implementation under torch.compile).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

namespace fastsr {

template <typename Signature>
inline c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// Whether autograd has anything to record: grad mode on and some input requiring grad. When
// not (inference, evaluation), the wrappers call the kernel below the autograd key directly
// instead of building a graph node that nothing uses (~1-2 us a call, a tenth of a GPU call).
template <typename... Ts>
inline bool records_graph(const Ts&... tensors) {
  return at::GradMode::is_enabled() && (tensors.requires_grad() || ...);
}

}  // namespace fastsr
