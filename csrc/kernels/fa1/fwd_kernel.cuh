// FlashAttention-1's work split (the seed study's "FA1"), on the same building blocks as FA2.
//
// One CTA per (sequence, query head) owns the whole attention of that head. Its outer loop
// streams key/value blocks through shared memory; for each block the inner loop visits the
// query rows (16 per warp per step) that see it, restores their running softmax state and
// output from global memory, folds the block in, and writes the state back. The output of a
// row is normalised and written when its last visible block has been folded in. FA2 swapped
// the loops (queries outer, keys inner, state in registers) and parallelised over query
// blocks; this kernel keeps FA1's order so its cost can be measured side by side.
//
// Global scratch (FwdParams::workspace, fp32): the running output, [rows][heads_q][d], then the
// running (max, sum) of each row and head, [rows][heads_q][2]; rows = all query rows.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "common/online_softmax.cuh"
#include "common/ptx.cuh"
#include "common/sequence.cuh"
#include "common/tile_copy.cuh"
#include "torch_flashinfer/params.h"

namespace torch_flashinfer::fa1 {


template <int kHeadDim_>
struct Shape {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  // keys per outer step: large for small heads (FA1 used 128-256), small enough above d=128 that
  // S and O stay in registers
  static constexpr int kBlockN = kHeadDim <= 64 ? 128 : kHeadDim <= 128 ? 64 : 32;
  static constexpr int kNTiles = kBlockN / 8;
  static constexpr int kDTiles = kHeadDim / 8;
  static constexpr int kStride = kHeadDim + 8;

  template <typename T>
  static constexpr size_t smem_bytes() {
    return size_t(2 * kBlockN + kWarps * 16) * kStride * sizeof(T);
  }
};

template <typename T, typename S, KvMode kMode>
__global__ void __launch_bounds__(S::kThreads) fwd_kernel(const __grid_constant__ FwdParams p, int64_t rows_total) {
  using Traits = DtypeTraits<T>;
  constexpr int kN = S::kBlockN, kD = S::kHeadDim, kStride = S::kStride, kNT = S::kNTiles, kDT = S::kDTiles;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + kN * kStride;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, g = lane / 4, t4 = lane % 4;
  T* sQ = sV + kN * kStride + warp * 16 * kStride;  // this warp's 16 query rows

  const int b = blockIdx.x / p.heads_q, h = blockIdx.x % p.heads_q;
  const int hk = h / (p.heads_q / p.heads_k);
  const Sequence seq = load_sequence(p, b);
  if (seq.seqlen_q == 0) return;
  const Mask mask(p, seq);

  const T* q_head = static_cast<const T*>(p.q) + seq.q_offset + int64_t(h) * p.q_head_stride;
  const T* k_head = static_cast<const T*>(p.k) + int64_t(hk) * p.k_head_stride;
  const T* v_head = static_cast<const T*>(p.v) + int64_t(hk) * p.v_head_stride;
  T* o_head = static_cast<T*>(p.out) + seq.o_offset + int64_t(h) * p.o_head_stride;
  float* lse_head = p.lse + seq.lse_offset + int64_t(h) * p.lse_head_stride;
  float* o_state = p.workspace;                                      // [rows][heads_q][d]
  float* stats = p.workspace + rows_total * p.heads_q * kD;         // [rows][heads_q][2]
  auto state_row = [&](int i) { return (seq.q_row0 + i) * p.heads_q + h; };

  const ScoreMod mod(p);
  const float slope = mod.slope(p, b, h);

  // Normalise and write rows [m0, m0 + 16) of this warp (rows that saw no key: zeros, -inf).
  auto write_rows = [&](int m0, const float (&acc)[1][kDT][4], const OnlineSoftmax<T, 1, kNT>& sm) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const float sum = sm.total(0, half);
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const int i = m0 + g + half * 8;
      if (i >= seq.seqlen_q) continue;
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt) {
        *reinterpret_cast<uint32_t*>(o_head + int64_t(i) * p.o_row_stride + dt * 8 + 2 * t4) =
            Traits::pack(acc[0][dt][2 * half] * inv, acc[0][dt][2 * half + 1] * inv);
      }
      if (p.lse != nullptr && t4 == 0) {
        lse_head[i] = sum > 0.f ? sm.row_max[0][half] * mod.scale + __logf(sum) : -INFINITY;
      }
    }
  };

  const int n_blocks = (seq.seqlen_k + kN - 1) / kN;
  for (int kb = 0; kb < max(n_blocks, 1); ++kb) {
    const int n0 = kb * kN;
    if (kb < n_blocks) {
      load_kv_tile<kN, S::kThreads, kD, kMode>(p, seq, b, k_head, v_head, n0, sK, sV, tid, L2Hint{false, 0});
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();

    for (int m0 = warp * 16; m0 < seq.seqlen_q; m0 += S::kWarps * 16) {
      const int m_end = min(m0 + 16, seq.seqlen_q);
      const int key_begin = mask.key_begin(m0), key_end = mask.key_end(m_end);
      float acc_o[1][kDT][4];
      OnlineSoftmax<T, 1, kNT> softmax;
      if (key_end <= key_begin) {  // these rows see no key: write zeros and -inf once
        if (kb == 0) {
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_o[0][dt][e] = 0.f;
          softmax.init();
          write_rows(m0, acc_o, softmax);
        }
        continue;
      }
      const int first = key_begin / kN, last = (key_end - 1) / kN;
      if (kb < first || kb > last) continue;

      load_q_tile<16, 32, kD>(p, q_head, seq.seqlen_q, m0, sQ, lane, L2Hint{false, 0});  // re-read: default policy
      cp_async_commit();
      // Restore (or start) the rows' state while Q lands.
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int i = min(m0 + g + half * 8, seq.seqlen_q - 1);
        if (kb == first) {
          softmax.row_max[0][half] = -INFINITY;
          softmax.row_sum[0][half] = 0.f;
        } else {
          const float2 st = *reinterpret_cast<const float2*>(stats + state_row(i) * 2);
          softmax.row_max[0][half] = st.x;
          softmax.row_sum[0][half] = t4 == 0 ? st.y : 0.f;  // the sum is split over the quad
        }
#pragma unroll
        for (int dt = 0; dt < kDT; ++dt) {
          float2 o = make_float2(0.f, 0.f);
          if (kb != first) o = *reinterpret_cast<const float2*>(o_state + state_row(i) * kD + dt * 8 + 2 * t4);
          acc_o[0][dt][2 * half] = o.x;
          acc_o[0][dt][2 * half + 1] = o.y;
        }
      }
      cp_async_wait<0>();
      __syncwarp();

      float s[1][kNT][4];
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[0][nt][e] = 0.f;
#pragma unroll 4
      for (int ks = 0; ks < kD / 16; ++ks) {
        uint32_t a[4];
        ldmatrix_x4(a, smem_addr(sQ + (lane % 16) * kStride + ks * 16 + (lane / 16) * 8));
#pragma unroll
        for (int np = 0; np < kNT / 2; ++np) {
          uint32_t bk[4];
          const int key = np * 16 + (lane % 8) + (lane / 16) * 8;
          ldmatrix_x4(bk, smem_addr(sK + key * kStride + ks * 16 + ((lane / 8) % 2) * 8));
          Traits::mma(s[0][2 * np], a, bk[0], bk[1]);
          Traits::mma(s[0][2 * np + 1], a, bk[2], bk[3]);
        }
      }
      const bool needs_mask = !mask.all_visible(m0, m_end, n0, n0 + kN);
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = m0 + g + (e / 2) * 8, j = n0 + nt * 8 + 2 * t4 + (e % 2);
          float x = s[0][nt][e];
          if (mod.has_softcap) x = mod.softcapped(x);
          if (mod.has_alibi) x -= slope * fabsf(float(i + mask.shift - j));
          if (needs_mask && !mask.visible(i, j)) x = -INFINITY;
          s[0][nt][e] = x;
        }
      uint32_t p_frag[1][kNT][2];
      softmax.update(s, p_frag, acc_o, mod.scale_log2);
#pragma unroll
      for (int ks = 0; ks < kN / 16; ++ks) {
        uint32_t a[4];
        p_fragment(p_frag, 0, ks, a);
#pragma unroll
        for (int dp = 0; dp < kDT / 2; ++dp) {
          uint32_t bv[4];
          const int key = ks * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
          ldmatrix_x4_trans(bv, smem_addr(sV + key * kStride + dp * 16 + (lane / 16) * 8));
          Traits::mma(acc_o[0][2 * dp], a, bv[0], bv[1]);
          Traits::mma(acc_o[0][2 * dp + 1], a, bv[2], bv[3]);
        }
      }

      if (kb == last) {
        write_rows(m0, acc_o, softmax);
      } else {  // back to global memory until the next key block this row sees
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int i = m0 + g + half * 8;
          const float sum = softmax.total(0, half);
          if (i >= seq.seqlen_q) continue;
#pragma unroll
          for (int dt = 0; dt < kDT; ++dt) {
            *reinterpret_cast<float2*>(o_state + state_row(i) * kD + dt * 8 + 2 * t4) =
                make_float2(acc_o[0][dt][2 * half], acc_o[0][dt][2 * half + 1]);
          }
          if (t4 == 0) *reinterpret_cast<float2*>(stats + state_row(i) * 2) = make_float2(softmax.row_max[0][half], sum);
        }
      }
      __syncwarp();  // sQ is reloaded by the next step
    }
    __syncthreads();  // the K/V block is overwritten by the next outer step
  }
}

}  // namespace torch_flashinfer::fa1
