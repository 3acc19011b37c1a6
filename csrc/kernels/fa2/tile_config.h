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
  // Starting points chosen for zero register spills (nvcc 13.0, sm_90a, -Xptxas -v); H100
  // timings that confirm or replace them: benchmarks/results/h100/fa2_tiles.json.
  return head_dim <= 64    ? Tile{128, 64, 4}   // 2 m-tiles per warp: each K/V fragment feeds 2 mma
         : head_dim <= 224 ? Tile{128, 64, 8}   // 1 m-tile per warp keeps O (<= 112 regs) without spills
                           : Tile{128, 32, 8};  // d=256: 128 O regs per thread; 32-key steps
}

#ifdef TFI_FA2_BLOCK_M
constexpr Tile tile_for(int) { return Tile{TFI_FA2_BLOCK_M, TFI_FA2_BLOCK_N, TFI_FA2_WARPS}; }
#else
constexpr Tile tile_for(int head_dim) { return default_tile(head_dim); }
#endif

}  // namespace torch_flashinfer::fa2
