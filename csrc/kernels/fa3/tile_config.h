// fa3 tile shapes per head_dim: the one place where they are chosen.
//
// A CTA is three warpgroups: one copies (TMA), two compute, each on 64 of the tile's 128 query
// rows. Shared memory holds the Q tile and two stages of K and V tiles of kBlockN keys:
// (128 + 4 kBlockN) * head_dim * 2 bytes, one CTA per SM (at most 227 KB). kBlockN is the
// largest of 128 / 96 / 80 that fits; a compute thread then holds kBlockN / 2 scores, their
// kBlockN / 4 packed probabilities and head_dim / 2 output accumulators (d=256: 40 + 20 + 128).
// Not yet timed on a GPU: these are the shapes FlashAttention-3 reports for the H100, cut to
// what fits two stages.
// Tuning builds override the key tile with -DTFI_FA3_BLOCK_N=..
#pragma once

namespace torch_flashinfer::fa3 {

constexpr int default_block_n(int head_dim) {
  return head_dim <= 160 ? 128 : head_dim <= 224 ? 96 : 80;
}

#ifdef TFI_FA3_BLOCK_N
constexpr int block_n_for(int) { return TFI_FA3_BLOCK_N; }
#else
constexpr int block_n_for(int head_dim) { return default_block_n(head_dim); }
#endif

}  // namespace torch_flashinfer::fa3
