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

}  // namespace fastsr
