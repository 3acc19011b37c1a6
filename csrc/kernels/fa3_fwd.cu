// Kernel library "fa3_<dtype>_hd<head_dim>" (Hopper prefill, varlen, paged): exports tfi_fwd, tfi_fwd_workspace and tfi_fwd_counters (api.h).
#include "torch_flashinfer/api.h"

#include "common/variant.h"
#include "fa3/launch.cuh"

TFI_EXPORT const char* tfi_fwd(const torch_flashinfer::FwdParams* p, cudaStream_t stream) {
  using namespace torch_flashinfer;
  if (const char* err = variant_mismatch(*p)) return err;
  return fa3::run_fwd<VariantElement, TFI_HEAD_DIM>(*p, stream);
}

TFI_EXPORT long long tfi_fwd_workspace(const torch_flashinfer::FwdParams*) { return 0; }

TFI_EXPORT long long tfi_fwd_counters(const torch_flashinfer::FwdParams*) { return 0; }
