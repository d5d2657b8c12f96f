// Autocast rules of the losses that are more than a cast to float32 (those are registered in fastops/ops/losses.py).
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>

namespace fastops {
namespace {

// torch bans binary_cross_entropy under CUDA autocast (aten/src/ATen/autocast_mode.cpp), with this message; under
// CPU autocast it runs in float32, which fastops/ops/losses.py registers.
at::Tensor binary_cross_entropy_banned(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                       int64_t) {
  TORCH_CHECK(false,
              "torch.nn.functional.binary_cross_entropy and torch.nn.BCELoss are unsafe to autocast.\n"
              "Many models use a sigmoid layer right before the binary cross entropy layer.\n"
              "In this case, combine the two layers using torch.nn.functional.binary_cross_entropy_with_logits\n"
              "or torch.nn.BCEWithLogitsLoss.  binary_cross_entropy_with_logits and BCEWithLogits are\n"
              "safe to autocast.");
}

}  // namespace

TORCH_LIBRARY_IMPL(fastops, AutocastCUDA, m) { m.impl("binary_cross_entropy", &binary_cross_entropy_banned); }

}  // namespace fastops
