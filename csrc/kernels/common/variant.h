// The variant a kernel library is built for: -DTFI_HEAD_DIM=<d> -DTFI_DTYPE_BF16=0|1 (set by
// torch_flashinfer/_kernels.py; the defaults let a plain nvcc call compile the file).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#ifndef TFI_HEAD_DIM
#define TFI_HEAD_DIM 128
#endif
#ifndef TFI_DTYPE_BF16
#define TFI_DTYPE_BF16 0
#endif

namespace torch_flashinfer {

using VariantElement = std::conditional_t<TFI_DTYPE_BF16, __nv_bfloat16, __half>;

// Why a call cannot run on this library, or nullptr.
inline const char* variant_mismatch(const FwdParams& p) {
  return p.head_dim != TFI_HEAD_DIM || p.is_bf16 != bool(TFI_DTYPE_BF16) ? "kernel variant mismatch" : nullptr;
}

}  // namespace torch_flashinfer
