// FA2 tile shapes per head_dim: the one place where they are chosen.
// kBlockM queries x kBlockN keys per step, kNWarps warps (each owns kBlockM / kNWarps rows).
// Shared memory: (kBlockM + 4 * kBlockN) * (head_dim + 8) * 2 bytes (Q + two K/V stages).
// Tuning builds override the shape with -DTFI_FA2_BLOCK_M=.. -DTFI_FA2_BLOCK_N=.. -DTFI_FA2_WARPS=..
#pragma once

namespace torch_flashinfer::fa2 {

struct Tile {
  int block_m, block_n, warps;
};

constexpr Tile default_tile(int head_dim) {
  // H100, fp16, b*s = 16k tokens, s = 1024 and 4096, causal and not (benchmarks/tune_fa2.py;
  // benchmarks/results/h100/fa2_tiles.json). Two 16-row m-tiles per warp feed each K/V
  // fragment read from shared memory to two mma: that halves shared-memory traffic and is worth
  // ~15-30% over one m-tile per warp wherever the O accumulators still fit in registers.
  return head_dim <= 64    ? Tile{128, 128, 4}  // d=64: 297 TF vs 288 (128x64x4), 271 (128x32x4)
         : head_dim <= 128 ? Tile{128, 64, 4}   // d=128: 321 TF vs 279 (128x32x4), 245 (128x64x8)
                           : Tile{128, 64, 8};  // d>128: O needs >= 80 regs per m-tile; d=256: 285 vs 255 (64x32x4)
}

#ifdef TFI_FA2_BLOCK_M
constexpr Tile tile_for(int) { return Tile{TFI_FA2_BLOCK_M, TFI_FA2_BLOCK_N, TFI_FA2_WARPS}; }
#else
constexpr Tile tile_for(int head_dim) { return default_tile(head_dim); }
#endif

}  // namespace torch_flashinfer::fa2
