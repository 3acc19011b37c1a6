// fa3 tile shapes per head_dim: the one place where they are chosen.
//
// A CTA is three warpgroups: one copies (TMA), two compute, each on 64 of the tile's 128 query
// rows. Shared memory holds one or two Q tiles (fwd_kernel.cuh kQBuffers) and two stages of K and V
// tiles of kBlockN keys: (128 kQBuffers + 4 kBlockN) * head_dim * 2 bytes, one CTA per SM (at
// most 227 KB). kBlockN is the largest of 128 / 96 / 80 that fits; a compute thread then holds
// kBlockN / 2 scores, their kBlockN / 4 packed probabilities and head_dim / 2 output accumulators
// (d=256: 40 + 20 + 128).
// d=224 takes 64 (96 fits, but with the persistent loop's state its math warpgroups spilled 72-96
// bytes; 80 does not split evenly over the copy warpgroup's cp.async loop).
// The schedule of the math warpgroups (fwd_kernel.cuh): FlashAttention-3's overlap of one tile's
// softmax with the previous tile's P V, the two warpgroups taking turns (ping-pong), for head
// dims up to 128; each tile's Q K^T, softmax and P V in turn above. Turns for every batch of
// matrix work, run on across items (so the single key tile of a short prompt ping-pongs too),
// were no better: 1-2 % faster on the seed's GQA hybrid batches, within noise on the MHA ones and
// the prefill rows, 8 % slower on 64 ragged GQA prompts around 64 tokens (fa3_pingpong_turns.json).
// On the H200 (fp16, 4 x 4k causal, benchmarks/results/h200/fa3_schedules.json) the overlapped
// schedule takes 0.746 ms against 0.843 at d=64 and 2.00 against 2.30 at 2 x 8k d=128; it also
// ran 0.936 against 1.271 at d=256, but spills there (nvcc 13.0, the build's flags: 136 / 20 / 92
// bytes for contiguous / paged-row / paged-tile caches; d=192 and 224 80 bytes contiguous), over
// the compile check's 64. d=160 spills 32 bytes in every mode, within it, but is untimed: d >= 160 stays plain.
// Persistent CTAs: with more work items than SMs, one CTA per SM runs items in rounds of the grid
// (fwd_kernel.cuh cta_item), and an item's first K/V tile is copied during the previous item's
// math (one CTA fits an SM, so without this nothing hides an item's first copies: short prompts
// are all first copies). A causal prompt's query tiles take 1..n key tiles, and a plain stride over
// the rounds loaded some SMs with the long ones (2.17 against 2.00 ms non-persistent at 2 x 8k
// causal; at 32 x 512 the 4 tiles per head divide the 132 CTAs, so each CTA got the same tile of
// every head), so masked items ran one CTA each. The rounds now alternate direction, which pairs
// heavy tiles with light ones, and masked items run persistent too: on the H200 (fp16,
// benchmarks/results/h200/fa3_persistent_masked.json, one build against the other in one call)
// 0.247 against 0.315 ms at 32 x 512 causal, 0.563 / 0.610 at 8 x 2k, 2.008 / 2.044 at 2 x 8k,
// 0.691 / 0.740 at 4 x 4k d=64, 0.989 / 1.039 at d=256; unmasked rows within 1-4 % either way.
// A TMA prefetch into L2 of each item's Q and first K/V tile during the item before made short
// rows slower (0.136 against 0.123 ms on the seed's 100 x 128-token hybrid batch) and was dropped;
// its cost grew with the items, not with their bytes (d=64 4 x 4k causal 0.785 against 0.691), as if
// each prefetch held up the thread that issues the copies. One prefetch.global.L2 per line from the
// whole copy warpgroup instead lost too: 0.134 against 0.122 ms on that batch (fa3_row_prefetch.json).
// An L1 prefetch of the next item's sequence metadata as an item starts (commit ae46cac) lost too:
// 4-15 % slower on every hybrid batch (one H100: MHA 0 % 0.112 against 0.097 ms, 100 % 0.162 against
// 0.157; benchmarks/results/h100/fa3_prefetch_ab.json).
// Nor does the order or depth of the copies limit that batch (fa3_copy_order.json, one process per
// build, ms at 100 % prefill): the first K/V tile before Q 0.124, three K/V stages with one Q buffer
// 0.143, TMA L2 promotion of 128 bytes or none (shipped: 256) 0.123 / 0.122, against 0.122 / 0.124.
// Two ideas for short items, tried as tuning builds and dropped (one H100, fa3 ms, two rounds;
// benchmarks/results/h100/fa3_wg_tiles_ab.json; the code is in git history, commits 27875da to e84914f):
// each math warpgroup running only the key tiles its 64 rows see (a decode request's second
// warpgroup none), with a 16-row Q box for items of at most 16 rows, won where decode requests
// dominate the hybrid batch (GQA 0 %: 0.083 against 0.094; there "auto" runs fa2) and lost where
// prompts do (GQA 100 %: 0.132 against 0.119, MHA 0.160 against 0.157; varlen 1-2 %), though no
// item there has a short or unequal range: its extra per-item code alone costs. Adding 64-key
// tiles and 4 stages (a causal diagonal's first warpgroup then skips a tile) won on 64- and
// 128-token varlen prompts (0.070 against 0.084, 0.146 against 0.151) and lost on the hybrid batches
// and on longer prompts (2048: 8.07 against 6.82): a lead for short-prompt batches, untimed alone.
// Three more tuning builds for that batch, dropped (one H100, fa3 ms at MHA 100 % prefill, the mean
// of two runs, shipped 0.156-0.157; benchmarks/results/h100/fa3_l2_obuffer_ab.json, code in git
// history, commits adf56cf, 4f6adcc, 071dc20 and 5142abe): O staged through a tile of its
// own, so a Q buffer goes back after the item's last Q K^T, 0.160 (2 % faster on 64 ragged
// 128-token GQA prompts, 4 % slower around 64); the L2 evict-first policy on Q, and on K/V where
// each head has one query tile and no GQA (fa2's rule), 0.161 (0.094 against 0.096 at 0 %, where
// "auto" runs fa2), also without L2 promotion 0.161, on the last column block's box only 0.157; no
// L2 promotion alone 0.156.
// -DTFI_FA3_STAGES=n: K/V stages of the ring, where they fit beside one Q tile (default 2).
// -DTFI_FA3_REVERSE_ROUNDS=0|1|2: persistent CTAs take every other round in reverse (fwd_kernel.cuh
// cta_item) never, only where a head has several query tiles (1), or always (2, the default). On
// the seed's 100 % hybrid batch (one query tile per head) a plain stride was 1 % faster as one varlen
// launch and the same dense (H100, benchmarks/results/h100/fa3_copy_ab.json, build 'noalt'). Over the
// seed's hybrid batches 1 was 0.1-1.1 % faster on the MHA ones and up to 1.6 % slower on the GQA 32/8
// ones at 0-30 % prefill, and within 0.6 % on ragged prompts (fa3_meta_lse_ab.json): 2 stays.
// -DTFI_FA3_DYNAMIC=0|1: persistent CTAs take their items after the first from a counter in
// global memory (1) instead of cta_item's fixed rounds (0, the default). Why: an SM's share of DRAM
// bandwidth depends on the SM. One-split decode launches (one CTA per SM, equal work) end in two
// groups about 3 % apart, and each CTA's end follows its SM (per-SM end times correlate at 0.98
// across calls; benchmarks/results/h100/decode_cta_times.json). With fixed rounds, the slow SMs
// then set the end of a bandwidth-bound launch. On the seed's 100 % hybrid batch, fa3 with its math
// removed took 0.1475 ms. A Triton copy over fa3's own tiles (one CTA per item, placed by the
// hardware as SMs free up) took 0.1409 (fa3_meta_lse_ab.json). Untimed: build 1 is the A/B to run
// (FA3_VARIANTS=". DYNAMIC=1").
// Tuning builds override them with -DTFI_FA3_BLOCK_N=64|80|96|128 (the shapes of fa3/wgmma.cuh)
// -DTFI_FA3_OVERLAP=0|1 -DTFI_FA3_PINGPONG=0|1 -DTFI_FA3_PERSISTENT=0|1|2 (1: unmasked items only)
// -DTFI_FA3_STAGES=n -DTFI_FA3_REVERSE_ROUNDS=0|1|2 -DTFI_FA3_DYNAMIC=0|1.
#pragma once

namespace torch_flashinfer::fa3 {

constexpr int default_block_n(int head_dim) {
  return head_dim <= 160 ? 128 : head_dim == 192 ? 96 : head_dim == 224 ? 64 : 80;
}

#ifdef TFI_FA3_BLOCK_N
constexpr int block_n_for(int) { return TFI_FA3_BLOCK_N; }
#else
constexpr int block_n_for(int head_dim) { return default_block_n(head_dim); }
#endif
#ifdef TFI_FA3_OVERLAP
constexpr bool overlap_for(int) { return TFI_FA3_OVERLAP != 0; }
#else
constexpr bool overlap_for(int head_dim) { return head_dim <= 128; }
#endif
#ifdef TFI_FA3_PINGPONG
#if TFI_FA3_PINGPONG && defined(TFI_FA3_OVERLAP) && !TFI_FA3_OVERLAP
#error "TFI_FA3_PINGPONG=1 takes turns in the overlapped schedule: it needs TFI_FA3_OVERLAP=1"
#endif
constexpr bool pingpong_for(int head_dim) { return TFI_FA3_PINGPONG != 0 && overlap_for(head_dim); }
#else
constexpr bool pingpong_for(int head_dim) { return overlap_for(head_dim); }
#endif
#ifndef TFI_FA3_PERSISTENT
#define TFI_FA3_PERSISTENT 2
#endif
constexpr bool kPersistent = TFI_FA3_PERSISTENT != 0;
constexpr bool kPersistentMasked = TFI_FA3_PERSISTENT == 2;
#ifndef TFI_FA3_REVERSE_ROUNDS
#define TFI_FA3_REVERSE_ROUNDS 2
#endif
constexpr int kReverseRounds = TFI_FA3_REVERSE_ROUNDS;
static_assert(kReverseRounds >= 0 && kReverseRounds <= 2, "TFI_FA3_REVERSE_ROUNDS: 0, 1 or 2");
#ifndef TFI_FA3_DYNAMIC
#define TFI_FA3_DYNAMIC 0
#endif
constexpr bool kDynamicItems = TFI_FA3_DYNAMIC != 0;
#ifndef TFI_FA3_STAGES
#define TFI_FA3_STAGES 2
#endif
constexpr int kKvStages = TFI_FA3_STAGES;
static_assert(kKvStages >= 2, "TFI_FA3_STAGES: at least 2 K/V stages");

}  // namespace torch_flashinfer::fa3
