// FA2 tile shapes per head_dim: the one place where they are chosen.
// kBlockM queries x kBlockN keys per step, kNWarps warps (each owns kBlockM / kNWarps rows).
// Shared memory: (kBlockM + 2 * stages * kBlockN) * head_dim * 2 bytes (Q + K/V stages); a
// launch that may hold decode rows (packed q, or seqlen_q <= kDecodeMaxSeqlenQ) takes the decode
// path's ring where that is larger (four-warp shapes: 65-102 KB; 136 KB at d=256, one CTA per SM).
// Tuning builds override the shape with -DTFI_FA2_BLOCK_M=.. -DTFI_FA2_BLOCK_N=.. -DTFI_FA2_WARPS=..
// -DTFI_FA2_STAGES=.. -DTFI_FA2_SWIZZLE=0|1
#pragma once

namespace torch_flashinfer::fa2 {

struct Tile {
  int block_m, block_n, warps;
  int stages = 2;        // K/V buffers (fwd_kernel.cuh): 2 stages of K + V, or 1 of each
  bool swizzle = false;  // shared-memory rows: swizzled, else padded by 16 bytes (tile_copy.cuh)
};

// TFLOPS on the H100 (fp16, b*s = 16k tokens, s = 4096, non-causal / causal) of the chosen
// shape, the runner-up, and SDPA's FlashAttention-2 in the same run (benchmarks/tune_fa2.py,
// benchmarks/results/h100/fa2_tiles.json). Two 16-row m-tiles per warp (4 warps x 32 rows) feed
// every K/V fragment read from shared memory to two mma, halving shared-memory traffic; past
// d=128 the O accumulators no longer fit twice, so each warp owns one m-tile. One K/V stage
// (fwd_kernel.cuh) wins at d=192 and d=256, where it lets two 64-row CTAs share an SM (96 KB at
// d=256); elsewhere two stages are as fast or faster. An L2 prefetch on the copies
// (tile_copy.cuh) gains nothing here. Swizzled rows against padded ones, the shipped shape in both
// layouts in one run (benchmarks/results/h100/fa2_tiles_layout.json, the first number pair of each
// line below): swizzled wins at d=32, 64, 192 and 256 (at d=256 by 8-10 %: fewer shared-memory
// wavefronts and L2 sectors per copy), padded at d=128 by 0-3 %. d=64 stays padded: swizzled, its
// sm_80 build spills 68 bytes (the compile check's budget is 64). d=96, 160, 224 were timed padded
// only (benchmarks/results/h100/fa2_tiles.json) and stay padded.
constexpr Tile default_tile(int head_dim) {
  switch (head_dim) {
    case 32: return Tile{128, 64, 4, 2, true};   // 212 / 190 (padded 204 / 182); flash 215 / 199
    case 64: return Tile{128, 128, 4};           // 298 / 276 (swizzled 308 / 281, spills on sm_80); flash 298 / 278
    case 96: return Tile{128, 64, 4};            // 304 / 284; 1 stage 291 / 265; flash 303 / 293
    case 128: return Tile{128, 64, 4};           // 341 / 315 (swizzled 332 / 315); flash 334 / 303
    case 160: return Tile{64, 64, 4};            // 258 / 229; 128x64x8 232 / 210; flash 237 / 216
    case 192: return Tile{64, 64, 4, 1, true};   // 279 / 253 (padded 257 / 241); flash 319 / 289
    case 224: return Tile{128, 64, 8};           // 263 / 234; 1 stage 263 / 237; flash 239 / 216
    default: return Tile{64, 64, 4, 1, true};    // d=256: 306 / 286 (padded 282 / 261); flash 310 / 281
  }
}

// Query sequences this short run as decode rows inside the FA2 launch (a hybrid batch's decode
// requests): GQA-packed 16-row m-tiles, keys split over the warps, K/V streamed once per K/V
// head. A 128-row query tile would spend 8x the tensor work on padding rows at 16 queries and
// read K/V once per query head. H100, benchmarks/results/h100/seed.json hybrid rows.
constexpr int kDecodeMaxSeqlenQ = 16;

// Causal and windowed launches start the heaviest query tiles first over windows of (sequence,
// head) pairs whose K/V take at most this many bytes (launch.cuh, fwd_kernel.cuh tile_order): pair
// by pair, the last pairs' long tiles started late and left SMs idle at the end of the launch.
// One H100, fa2 ms, 16 MB windows against pair by pair, two runs each
// (benchmarks/results/h100/fa2_tile_order_ab.json): causal 8 x 2k 0.889 / 0.898 against 0.932 /
// 0.928, 2 x 8k 3.16 / 3.10 against 3.23 / 3.27, d=64 4 x 4k 0.973 / 1.007 against 0.979 / 1.052,
// d=256 1.87 / 1.92 against 1.88 / 1.97, 32 x 512 0.335 / 0.333 against 0.331 / 0.336; paged
// 4 x 4k GQA causal 2-7 % faster at every page size; 64 ragged prompts -1 to +2 %; every head dim
// at 4 x 4k causal (about 4096 model width) -0.5 to +9 % (d=96 1.84 / 1.85 against 2.01 / 1.92). 32 MB
// windows: within 3 % of 16 either way. Rows of one query tile per pair (same order in both builds)
// tie. Tuning builds: -DTFI_FA2_ORDER_WINDOW_MB=n (0: pair by pair).
#ifndef TFI_FA2_ORDER_WINDOW_MB
#define TFI_FA2_ORDER_WINDOW_MB 16
#endif
constexpr long long kOrderWindowBytes = (long long)TFI_FA2_ORDER_WINDOW_MB << 20;

#ifdef TFI_FA2_BLOCK_M
#ifndef TFI_FA2_STAGES
#define TFI_FA2_STAGES 2
#endif
#ifndef TFI_FA2_SWIZZLE
#define TFI_FA2_SWIZZLE 0
#endif
constexpr Tile tile_for(int) {
  return Tile{TFI_FA2_BLOCK_M, TFI_FA2_BLOCK_N, TFI_FA2_WARPS, TFI_FA2_STAGES, TFI_FA2_SWIZZLE != 0};
}
#else
constexpr Tile tile_for(int head_dim) { return default_tile(head_dim); }
#endif

}  // namespace torch_flashinfer::fa2
