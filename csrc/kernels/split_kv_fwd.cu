// Kernel library "split_kv_<dtype>_hd<head_dim>" (decode): exports tfi_fwd, tfi_fwd_workspace and tfi_fwd_counters (api.h).
#include "torch_flashinfer/api.h"

#include "common/variant.h"
#include "decode/launch.cuh"

TFI_EXPORT const char* tfi_fwd(const torch_flashinfer::FwdParams* p, cudaStream_t stream) {
  using namespace torch_flashinfer;
  if (const char* err = variant_mismatch(*p)) return err;
  if (p->cu_seqlens_q != nullptr) return "split_kv takes dense q (batch, seqlen_q, heads, head_dim)";
  return decode::run_split_kv<VariantElement, TFI_HEAD_DIM>(*p, stream);
}

TFI_EXPORT long long tfi_fwd_workspace(const torch_flashinfer::FwdParams* p) {
  using namespace torch_flashinfer;
  if (variant_mismatch(*p) != nullptr || p->cu_seqlens_q != nullptr) return 0;
  return decode::workspace_split_kv<TFI_HEAD_DIM>(*p);
}

TFI_EXPORT long long tfi_fwd_counters(const torch_flashinfer::FwdParams* p) {
  using namespace torch_flashinfer;
  if (variant_mismatch(*p) != nullptr || p->cu_seqlens_q != nullptr) return 0;
  return decode::counters_split_kv<TFI_HEAD_DIM>(*p);
}
