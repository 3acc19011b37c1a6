// Online softmax over a warp's score tile, shared by the attention kernels.
//
// Scores sit in the mma.m16n8k16 accumulator layout: kMT 16-row m-tiles x kNT 8-key n-tiles;
// a thread holds rows g and g + 8 of each m-tile (elements 0,1 and 2,3). Scores are in units
// where logit = scale * s, and masked scores are -inf.
#pragma once

#include <cstdint>

#include "common/ptx.cuh"

namespace torch_flashinfer {

template <typename T, int kMT, int kNT>
struct OnlineSoftmax {
  float row_max[kMT][2];  // running max of s per row (-inf until a key is seen)
  float row_sum[kMT][2];  // this thread's share of the running sum of exp

  __device__ __forceinline__ void init() {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
      row_max[mt][0] = row_max[mt][1] = -INFINITY;
      row_sum[mt][0] = row_sum[mt][1] = 0.f;
    }
  }

  // Folds one score tile in: exponentiates s into P, packed as the A fragments of P V
  // (p[mt][nt][half]: the two keys of n-tile nt for row half), and rescales the output
  // accumulators o when a row max moved -- skipped when no row of the warp moved, which is
  // most tiles after the first few.
  template <int kDT>
  __device__ __forceinline__ void update(const float (&s)[kMT][kNT][4], uint32_t (&p)[kMT][kNT][2],
                                         float (&o)[kMT][kDT][4], float scale_log2) {
    float alpha[kMT][2];
    if (__any_sync(0xffffffffu, exponentiate(s, alpha, scale_log2, p))) rescale(o, alpha);
  }

  // The steps of update, for a kernel whose output accumulators are busy in between (fa3: P V of
  // the previous tile runs while this one is exponentiated). With p, exp(logit - row max) goes
  // there packed; without, into s in place (for pack() later). The running sums take it in,
  // alpha[mt][half] is the factor the row's output accumulators need, and the return value says
  // whether a row of this thread moved (else its alpha is 1).
  template <typename Scores, typename... P>
  __device__ __forceinline__ bool exponentiate(Scores& s, float (&alpha)[kMT][2], float scale_log2, P&... p) {
    static_assert(sizeof...(P) <= 1, "exp into s, or packed into one p");
    bool moved = false;
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        float mx = row_max[mt][half];
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mx_scaled = mx == -INFINITY ? 0.f : mx * scale_log2;
        alpha[mt][half] = fast_exp2(row_max[mt][half] * scale_log2 - mx_scaled);
        moved |= mx != row_max[mt][half];
        row_max[mt][half] = mx;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < kNT; ++nt) {
          const float p0 = fast_exp2(s[mt][nt][2 * half] * scale_log2 - mx_scaled);
          const float p1 = fast_exp2(s[mt][nt][2 * half + 1] * scale_log2 - mx_scaled);
          sum += p0 + p1;
          if constexpr (sizeof...(P) == 1) {
            ((p[mt][nt][half] = DtypeTraits<T>::pack(p0, p1)), ...);
          } else {
            s[mt][nt][2 * half] = p0;
            s[mt][nt][2 * half + 1] = p1;
          }
        }
        row_sum[mt][half] = row_sum[mt][half] * alpha[mt][half] + sum;
      }
    }
    return moved;
  }
  __device__ __forceinline__ static void pack(const float (&s)[kMT][kNT][4], uint32_t (&p)[kMT][kNT][2]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int nt = 0; nt < kNT; ++nt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
          p[mt][nt][half] = DtypeTraits<T>::pack(s[mt][nt][2 * half], s[mt][nt][2 * half + 1]);
  }
  template <int kDT>
  __device__ __forceinline__ static void rescale(float (&o)[kMT][kDT][4], const float (&alpha)[kMT][2]) {
#pragma unroll
    for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
      for (int dt = 0; dt < kDT; ++dt)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[mt][dt][e] *= alpha[mt][e / 2];
  }

  // The row's full sum of exp (reduced over the 4 threads that share the row).
  __device__ __forceinline__ float total(int mt, int half) const {
    float sum = row_sum[mt][half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    return sum;
  }
};

// The A fragment of one 16-key step of P V: n-tiles 2 * ks and 2 * ks + 1 of P.
template <int kMT, int kNT>
__device__ __forceinline__ void p_fragment(const uint32_t (&p)[kMT][kNT][2], int mt, int ks, uint32_t (&a)[4]) {
  a[0] = p[mt][2 * ks][0];
  a[1] = p[mt][2 * ks][1];
  a[2] = p[mt][2 * ks + 1][0];
  a[3] = p[mt][2 * ks + 1][1];
}

}  // namespace torch_flashinfer
