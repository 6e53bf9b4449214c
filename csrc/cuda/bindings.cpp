// pybind11 module panning._C_cuda: the hand-written CUDA kernels (csrc/cuda/*.cu).
//
// The .cu files know nothing of torch; this file checks the tensors, allocates outputs and workspace
// with torch's caching allocator, and launches on torch's current stream.
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/topk.cuh"

namespace {

panning::cuda::ScoreType score_type(const at::Tensor& scores) {
  const auto type = scores.scalar_type();
  TORCH_CHECK_TYPE(type == at::kHalf || type == at::kBFloat16 || type == at::kFloat || type == at::kDouble,
                   "scores: expected float16, bfloat16, float32 or float64, got ", type);
  using panning::cuda::ScoreType;
  return type == at::kHalf ? ScoreType::Float16
         : type == at::kBFloat16 ? ScoreType::BFloat16
         : type == at::kFloat ? ScoreType::Float32
                              : ScoreType::Float64;
}

// Exact top-k mask of every segment (see csrc/cuda/topk.cuh); raises ValueError on NaN scores.
at::Tensor topk_mask(const at::Tensor& scores, const at::Tensor& offsets, const at::Tensor& k) {
  TORCH_CHECK(scores.is_cuda() && scores.dim() == 1 && scores.is_contiguous(),
              "scores: expected a contiguous 1-D CUDA tensor");
  TORCH_CHECK(offsets.scalar_type() == at::kLong && k.scalar_type() == at::kLong, "offsets, k: expected int64");
  TORCH_CHECK(offsets.device() == scores.device() && k.device() == scores.device(),
              "offsets, k: expected on ", scores.device());
  TORCH_CHECK(offsets.dim() == 1 && k.dim() == 1 && offsets.numel() == k.numel() + 1,
              "offsets: expected one more entry than k");
  const c10::cuda::CUDAGuard guard(scores.device());
  auto mask = at::empty_like(scores, scores.options().dtype(at::kBool));
  if (scores.numel() == 0 || k.numel() == 0) return mask;
  const auto bounds = offsets.contiguous();
  const auto counts = k.contiguous();
  const auto workspace_bytes = panning::cuda::topk_workspace_bytes(scores.numel(), counts.numel());
  auto workspace = at::empty({static_cast<int64_t>(workspace_bytes / sizeof(int64_t))},
                             scores.options().dtype(at::kLong));
  auto nan_count = at::empty({1}, scores.options().dtype(at::kInt));
  const cudaError_t error = panning::cuda::topk_mask(
      scores.data_ptr(), score_type(scores), scores.numel(), bounds.data_ptr<int64_t>(), counts.data_ptr<int64_t>(),
      counts.numel(), mask.data_ptr<bool>(), workspace.data_ptr(),
      reinterpret_cast<unsigned int*>(nan_count.data_ptr<int32_t>()), c10::cuda::getCurrentCUDAStream());
  TORCH_CHECK(error == cudaSuccess, "topk_mask: CUDA launch failed: ", cudaGetErrorString(error));
  const int nans = nan_count.item<int32_t>();  // the one synchronization, to raise before returning
  if (nans > 0) {
    throw pybind11::value_error("scores: contains NaN (" + std::to_string(nans) + " found by the CUDA top-k kernel)");
  }
  return mask;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "panning CUDA kernels";
  m.def("topk_mask", &topk_mask, "exact segmented top-k mask (radix select, ties to the lower index)",
        pybind11::arg("scores"), pybind11::arg("offsets"), pybind11::arg("k"));
}
