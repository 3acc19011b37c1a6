// Kernel library "split_kv_<dtype>_hd<head_dim>" (decode): built once per variant with
// -DTFI_DTYPE_BF16=0|1 -DTFI_HEAD_DIM=<d>; exports tfi_fwd (api.h).
#include "decode/launch.cuh"
#include "torch_flashinfer/api.h"

#ifndef TFI_HEAD_DIM
#define TFI_HEAD_DIM 128
#endif
#ifndef TFI_DTYPE_BF16
#define TFI_DTYPE_BF16 0
#endif

using Element = std::conditional_t<TFI_DTYPE_BF16, __nv_bfloat16, __half>;

TFI_EXPORT const char* tfi_fwd(const torch_flashinfer::FwdParams* p, cudaStream_t stream) {
  if (p->head_dim != TFI_HEAD_DIM || p->is_bf16 != bool(TFI_DTYPE_BF16)) return "kernel variant mismatch";
  if (p->cu_seqlens_q != nullptr) return "split_kv takes dense q (batch, seqlen_q, heads, head_dim)";
  return torch_flashinfer::decode::run_split_kv<Element, TFI_HEAD_DIM>(*p, stream);
}
