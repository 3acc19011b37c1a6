// Kernel library "fa3_<dtype>_hd<head_dim>" (Hopper prefill, varlen, paged): exports tfi_fwd, tfi_fwd_workspace, tfi_fwd_counters and tfi_fa3_paged_by_tma (api.h).
#include "torch_flashinfer/api.h"

#include "common/variant.h"
#include "fa3/launch.cuh"

TFI_EXPORT const char* tfi_fwd(const torch_flashinfer::FwdParams* p, cudaStream_t stream) {
  using namespace torch_flashinfer;
  if (const char* err = variant_mismatch(*p)) return err;
  return fa3::run_fwd<VariantElement, TFI_HEAD_DIM>(*p, stream);
}

TFI_EXPORT long long tfi_fwd_workspace(const torch_flashinfer::FwdParams*) { return 0; }

TFI_EXPORT long long tfi_fwd_counters(const torch_flashinfer::FwdParams* p) {
  return torch_flashinfer::fa3::counters<TFI_HEAD_DIM>(*p);
}

TFI_EXPORT int tfi_fa3_paged_by_tma(int page_size) {
  using namespace torch_flashinfer;
  FwdParams p{};
  p.kv_layout = KvLayout::kPaged;
  p.page_size = page_size;
  constexpr int block_n = fa3::block_n_for(TFI_HEAD_DIM);
  return kv_mode(p, block_n) == KvMode::kPagedTile || fa3::tma_pages_per_tile(p, block_n) > 0;
}
