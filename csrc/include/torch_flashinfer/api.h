// The C entry points every kernel library exports. A library is built per variant (algorithm
// family, dtype, head_dim, arch) and loaded at run time; the torch binding calls these through
// function pointers, so kernels never see torch and build with plain nvcc.
#pragma once

#include <cuda_runtime.h>

#include "torch_flashinfer/params.h"

// fp32 scratch floats a call needs in FwdParams::workspace (0: none); the caller allocates it.
using tfi_fwd_workspace_fn = long long (*)(const torch_flashinfer::FwdParams*);
// uint32 counters a call needs in FwdParams::counters (0: none). The caller provides them zeroed
// and the call leaves them zeroed when it completes, so one buffer serves every call on a stream
// (a CUDA graph capture takes a fresh zeroed one: its replays may run on any stream).
using tfi_fwd_counters_fn = long long (*)(const torch_flashinfer::FwdParams*);
// Returns nullptr on success, else a static message.
using tfi_fwd_fn = const char* (*)(const torch_flashinfer::FwdParams*, cudaStream_t);
using tfi_append_kv_fn = const char* (*)(const torch_flashinfer::AppendKvParams*, cudaStream_t);

// fa3 libraries only: 1 when a paged cache of this page size (without left padding) is copied by
// TMA, 0 when by the copy warpgroup's cp.async loop (then "auto" takes fa2, _kernels.resolve_algo).
using tfi_fa3_paged_by_tma_fn = int (*)(int page_size);

#define TFI_EXPORT extern "C" __attribute__((visibility("default")))
