// Thin wrappers over the Hopper (sm_90a) instructions the fa3 kernel is built from: mbarriers
// (shared-memory barriers that count arrivals and bytes of bulk copies), TMA tile copies
// (cp.async.bulk.tensor, global -> shared, swizzled on the way), warpgroup register
// reallocation, named barriers, and the bookkeeping of wgmma (warpgroup matrix multiply, whose
// shapes are in fa3/wgmma.cuh). Each asm is only compiled for sm_90a; on other targets the
// bodies are empty and the kernels that use them refuse to launch (fa3/launch.cuh).
#pragma once

#include <cstdint>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TFI_SM90_ENABLED 1
#else
#define TFI_SM90_ENABLED 0
#endif

namespace torch_flashinfer::sm90 {

__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t arrivals) {
#if TFI_SM90_ENABLED
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals));
#endif
}
// Makes initialised mbarriers visible to the async proxy (TMA) before anyone uses them.
__device__ __forceinline__ void mbarrier_init_fence() {
#if TFI_SM90_ENABLED
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
#if TFI_SM90_ENABLED
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// One arrival that also expects `bytes` more of bulk copies before the phase completes.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#if TFI_SM90_ENABLED
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#endif
}
// Blocks until the phase of parity `parity` has completed. A new barrier is in phase 0, and
// the phase before it (parity 1) counts as completed: waiting on parity 1 returns at once.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
#if TFI_SM90_ENABLED
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_again:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_again;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}

// TMA: the box of `map` at coordinates (c0 innermost, ..., c3) into shared memory at `dst`; the
// bytes count towards `bar`'s expected transactions. Out-of-range elements are zero-filled.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2,
                                            int c3) {
#if TFI_SM90_ENABLED
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2];\n" ::"r"(dst),
      "l"(map), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
#endif
}

// Orders this thread's generic-proxy shared-memory writes (st.shared, cp.async) before later
// async-proxy accesses (wgmma operand reads, TMA writes) of the same bytes.
__device__ __forceinline__ void fence_proxy_async() {
#if TFI_SM90_ENABLED
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Warp-specialised kernels hand registers from the copy warpgroup to the math warpgroups.
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_dec() {
#if TFI_SM90_ENABLED
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}
template <int kRegs>
__device__ __forceinline__ void setmaxnreg_inc() {
#if TFI_SM90_ENABLED
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
#endif
}

// A barrier over `threads` threads (whole warps) of the CTA; id 0 is __syncthreads'. arrive
// counts towards it without waiting (a producer's half of a hand-off).
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// wgmma bookkeeping: fence before a batch whose accumulator or A registers other instructions
// wrote, commit the batch as a group, wait until at most N groups are pending.
__device__ __forceinline__ void wgmma_fence() {
#if TFI_SM90_ENABLED
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if TFI_SM90_ENABLED
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if TFI_SM90_ENABLED
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Keeps the compiler from moving reads or writes of a wgmma's accumulator or A registers across
// the asynchronous instruction (call on them before the batch and after its wait).
template <int N>
__device__ __forceinline__ void fence_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_registers(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// Shared-memory matrix descriptor of a wgmma operand (PTX ISA "matrix descriptor"): start
// address, leading and stride byte offsets (all >> 4), and the swizzle mode (1 = 128-byte,
// 2 = 64-byte). The tiles are aligned to their swizzle atoms, so the base offset is 0.
__device__ __forceinline__ uint64_t smem_descriptor(uint32_t addr, uint32_t leading_bytes, uint32_t stride_bytes,
                                                    int swizzle_bytes) {
  const uint64_t mode = swizzle_bytes == 128 ? 1 : 2;
  return uint64_t((addr & 0x3FFFF) >> 4) | uint64_t((leading_bytes >> 4) & 0x3FFF) << 16 |
         uint64_t((stride_bytes >> 4) & 0x3FFF) << 32 | mode << 62;
}

}  // namespace torch_flashinfer::sm90
