// FA2 tile shapes per head_dim: the one place where they are chosen.
// kBlockM queries x kBlockN keys per step, kNWarps warps (each owns kBlockM / kNWarps rows).
// Shared memory: (kBlockM + 2 * stages * kBlockN) * (head_dim + 8) * 2 bytes (Q + K/V stages), or
// the decode path's ring where that is larger (four-warp shapes: ~113 KB, two CTAs per H100 SM).
// Tuning builds override the shape with -DTFI_FA2_BLOCK_M=.. -DTFI_FA2_BLOCK_N=.. -DTFI_FA2_WARPS=..
// -DTFI_FA2_STAGES=..
#pragma once

namespace torch_flashinfer::fa2 {

struct Tile {
  int block_m, block_n, warps;
  int stages = 2;  // K/V buffers (fwd_kernel.cuh): 2 stages of K + V, or 1 of each
};

// TFLOPS on the H100 (fp16, b*s = 16k tokens, s = 4096, non-causal / causal) of the chosen
// shape, the runner-up, and SDPA's FlashAttention-2 in the same run (benchmarks/tune_fa2.py,
// benchmarks/results/h100/fa2_tiles.json). Two 16-row m-tiles per warp (4 warps x 32 rows) feed
// every K/V fragment read from shared memory to two mma, halving shared-memory traffic; past
// d=128 the O accumulators no longer fit twice, so each warp owns one m-tile. One K/V stage
// (fwd_kernel.cuh) wins only at d=192, where it lets two 64-row CTAs share an SM; elsewhere two
// stages are faster (d=256 64x64x4: 195 / 188 with one stage, 211 / 199 with two). An L2
// prefetch on the copies (tile_copy.cuh) gains nothing here.
constexpr Tile default_tile(int head_dim) {
  switch (head_dim) {
    case 32: return Tile{128, 64, 4};      // 218 / 197; 128x128x4 205 / 186; flash 215 / 196
    case 64: return Tile{128, 128, 4};     // 287 / 269; 128x64x4 285 / 260; flash 296 / 274
    case 96: return Tile{128, 64, 4};      // 307 / 268; 1 stage 287 / 261; flash 307 / 293
    case 128: return Tile{128, 64, 4};     // 335 / 297; 1 stage 318 / 296; flash 340 / 303
    case 160: return Tile{64, 64, 4};      // 254 / 236; 128x64x8 232 / 203; flash 239 / 224
    case 192: return Tile{64, 64, 4, 1};   // 256 / 239; 128x64x8 255 / 226; flash 318 / 282
    case 224: return Tile{128, 64, 8};     // 255 / 227; 64x32x4 234 / 230; flash 245 / 232
    default: return Tile{128, 64, 8};      // d=256: 268 / 241; 1 stage 259 / 235; flash 315 / 278
  }
}

// Query sequences this short run as decode rows inside the FA2 launch (a hybrid batch's decode
// requests): GQA-packed 16-row m-tiles, keys split over the warps, K/V streamed once per K/V
// head. A 128-row query tile would spend 8x the tensor work on padding rows at 16 queries and
// read K/V once per query head. H100, benchmarks/results/h100/seed.json hybrid rows.
constexpr int kDecodeMaxSeqlenQ = 16;

#ifdef TFI_FA2_BLOCK_M
#ifndef TFI_FA2_STAGES
#define TFI_FA2_STAGES 2
#endif
constexpr Tile tile_for(int) { return Tile{TFI_FA2_BLOCK_M, TFI_FA2_BLOCK_N, TFI_FA2_WARPS, TFI_FA2_STAGES}; }
#else
constexpr Tile tile_for(int head_dim) { return default_tile(head_dim); }
#endif

}  // namespace torch_flashinfer::fa2
