#!/usr/bin/env bash
# One device call: install, build every kernel, run the GPU tests, then an optional step.
#   bash benchmarks/gpu_session.sh [fa3|fa3_tests|fa3_variants|fa3_choice|fa3_ab|fa3_floor|tests|alltests|hftests|tune|tune_split|tune_paged|ncu_short|ncu_paged|ncu_hybrid|ncu_hybrid_stalls|ab_split|ab_paged|ab_bench|bench|decode|decode_ab|ncu|ncu_cmp|ncu_decode|llama|sanitize]...
#   (env: BUILD_ARGS, SUITE, SCENARIOS, BENCH_ARGS, BENCH_TIMEOUT, FA3_TESTS_TIMEOUT, CHOICE_ARGS, CHOICE_TIMEOUT, AB_GROUPS, AB_DIMS, FA2_VARIANTS, SANITIZE_TIMEOUT, TESTS_K, TESTS_ARGS, TESTS_TIMEOUT, SANITIZE_ALGOS, FA3_VARIANTS, FA3_VARIANTS_K, FLOOR_BATCHES, TUNE_DIMS, TUNE_ARGS, TUNE_SPLIT_ARGS, TUNE_TIMEOUT, PAGES, PAGED_ARGS, LLAMA_ARGS, NCU_CAUSAL, NCU_SHAPES, AB_CSRC, DECODE_AB_ARGS)
# Logs and JSON land in $OUT (the device tool brings them back).
set -uo pipefail
export PYTHONUNBUFFERED=1 MAX_JOBS=16 TORCH_FLASHINFER_CACHE_DIR=/tmp/tfi_cache
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT" /tmp/ab
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt" 2>&1
python3 -m pip install -q --no-deps --no-build-isolation -e . > /tmp/install.log 2>&1 || { cat /tmp/install.log; exit 1; }
# BUILD_ARGS narrows the build (python -m torch_flashinfer.build --families fa3 --head-dims 128 ...);
# whatever a step needs beyond it is built on first use
( time python3 -m torch_flashinfer.build ${BUILD_ARGS:-} ) > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
tail -3 "$OUT/build.log"
variant_tree() {  # tree=/tmp/csrc_<spec>: csrc with the tuning macros of spec NAME=value[,NAME=value] (TFI_FA3_NAME in
  # fa3/tile_config.h or TFI_FA2_NAME in fa2/tile_config.h), or a csrc/ directory as it is
  [ -f "$1/include/torch_flashinfer/params.h" ] && { tree=$(realpath "$1"); return 0; }
  [[ $1 =~ ^[A-Z_0-9]+=[0-9]+(,[A-Z_0-9]+=[0-9]+)*$ ]] || { echo "FA3_VARIANTS / FA2_VARIANTS: NAME=value[,NAME=value] of tile_config.h's TFI_FA3_ / TFI_FA2_ macros or a csrc/ directory (the _ab steps also take '.'), not '$1'"; return 1; }
  tree=/tmp/csrc_${1//[=,]/_}; rm -rf "$tree"; cp -r csrc "$tree"
  local kv fam; for kv in ${1//,/ }; do
    fam=; for f in fa3 fa2; do grep -q "TFI_${f^^}_${kv%%=*}\b" csrc/kernels/$f/tile_config.h && { fam=$f; break; }; done
    [ -n "$fam" ] || { echo "FA3_VARIANTS / FA2_VARIANTS: no TFI_FA3_ / TFI_FA2_${kv%%=*} in a tile_config.h"; return 1; }
    sed -i "/#pragma once/a #define TFI_${fam^^}_${kv%%=*} ${kv#*=}" "$tree/kernels/$fam/tile_config.h"; done
}
prebuild() {  # the fp16 libraries of family $1 at AB_DIMS (e.g. 64,128) in source tree $tree ('': this one), 8 at a time
  TORCH_FLASHINFER_CSRC=$tree MAX_JOBS=8 python3 -m torch_flashinfer.build --no-binding --families $1 --dtypes float16 \
    ${AB_DIMS:+--head-dims ${AB_DIMS// /}} 2>&1 | grep -v "^torch_flashinfer: build"
}
prebuild_variants() {  # prebuild for family $1 in each distinct tree of the spec list $2 ('.': this one), side by
  local v; for v in $(printf '%s\n' $2 | sort -u); do  # side: a build pause in a timed process let the GPU cool
    tree=; [ "$v" = . ] || variant_tree $v || continue  # (rows after one ran up to 10 % faster)
    prebuild $1 &
  done; wait
}
fa3_label() { [ "$1" = . ] && echo "== fa3 as shipped" || echo "== fa3 $1"; }
for step in "$@"; do
  case $step in
    fa3) nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Icsrc/include -Icsrc/kernels benchmarks/fa3_probe.cu \
           -o /tmp/fa3_probe && timeout 60 /tmp/fa3_probe 2>&1 | tee "$OUT/fa3_probe.log"  # TMA, layouts, wgmma alone
         timeout 120 python3 -c "
import torch, torch_flashinfer  # one fa3 call against fa2 first: a hang or a fault shows here, in seconds
q, k, v = (torch.randn(2, 300, 8, 128, device='cuda', dtype=torch.float16) for _ in range(3))
for causal in (False, True):
    a, b = (torch_flashinfer.flash_attn_func(q, k, v, causal=causal, algo=algo) for algo in ('fa3', 'fa2'))
    print('fa3 smoke, causal', causal, 'max |fa3 - fa2|', (a.float() - b.float()).abs().max().item())" 2>&1 | tee "$OUT/fa3_smoke.log" ;;
    fa3_tests) timeout ${FA3_TESTS_TIMEOUT:-420} python3 -m pytest -q -n 8 --timeout 120 --timeout-method thread --maxfail 40 -k fa3 tests/test_cuda_fwd.py 2>&1 \
           | tee "$OUT/fa3_tests.log" | tail -30 ;;
    fa3_variants) for v in ${FA3_VARIANTS:-PERSISTENT=1 PERSISTENT=0}; do  # the fa3 tests on each fa3 build (variant_tree's specs)
           variant_tree $v || continue; fa3_label $v
           TORCH_FLASHINFER_CSRC=$tree timeout 540 python3 -m pytest -q -n 8 \
             --timeout 180 --timeout-method thread --maxfail 20 -k "${FA3_VARIANTS_K:-fa3}" tests/test_cuda_fwd.py 2>&1 | tail -6  # (first calls build the tree)
         done 2>&1 | tee "$OUT/fa3_variants.log" ;;
    fa3_choice) timeout ${CHOICE_TIMEOUT:-300} python3 benchmarks/fa3_choice.py --out "$OUT/fa3_choice.json" ${CHOICE_ARGS:-} 2>&1 \
           | tee "$OUT/fa3_choice.log" | grep -v "^torch_flashinfer: build" ;;
    fa3_ab) prebuild_variants fa3 "${FA3_VARIANTS:-. PERSISTENT=1}"
         i=0; for v in ${FA3_VARIANTS:-. PERSISTENT=1}; do  # fa3 prefill timings of each fa3 build ('.': this tree as it is)
           tree=; i=$((i + 1)); [ "$v" = . ] || variant_tree $v || continue; fa3_label $v
           TORCH_FLASHINFER_CSRC=$tree timeout 200 python3 benchmarks/fa3_choice.py --algos fa3 --groups ${AB_GROUPS:-prefill} \
             --out "/tmp/ab/fa3_${i}_$([ "$v" = . ] && echo shipped || echo "$v" | tr '=,/.' '_-__').json"; done 2>&1 | tee "$OUT/fa3_ab.log" | grep -v "^torch_flashinfer: build"
         tar -C /tmp -cf "$OUT/fa3_ab.tar" ab ;;
    fa3_floor) AB_DIMS=${AB_DIMS:-128} prebuild_variants fa3 "${FA3_VARIANTS:-. DYNAMIC=1}"
         for run in 1 2; do for v in ${FA3_VARIANTS:-. DYNAMIC=1}; do  # fa3_floor.py on each fa3 build, twice (peers: first run of '.')
           tree=; [ "$v" = . ] || variant_tree $v || continue; fa3_label $v
           tag=$([ "$v" = . ] && echo shipped || echo "$v" | tr '=,/.' '_-__')
           peers=$([ "$v" = . ] && [ $run = 1 ] && echo all || echo none)
           TORCH_FLASHINFER_CSRC=$tree timeout 200 python3 benchmarks/fa3_floor.py --tag "$tag" --peers $peers \
             --batches ${FLOOR_BATCHES:-100,132} --out "/tmp/ab/floor_${run}_$tag.json"; done; done 2>&1 \
           | tee "$OUT/fa3_floor.log" | grep -v "^torch_flashinfer: build"; tar -C /tmp -cf "$OUT/fa3_floor.tar" ab ;;
    fa2_ab) prebuild_variants fa2 "${FA2_VARIANTS:-. ORDER_WINDOW_MB=0}"
         for run in 1 2; do for v in ${FA2_VARIANTS:-. ORDER_WINDOW_MB=0}; do  # fa2 prefill timings of each build, twice
           tree=; [ "$v" = . ] || variant_tree $v || continue; echo "== fa2 $v, run $run"
           TORCH_FLASHINFER_CSRC=$tree timeout 300 python3 benchmarks/fa3_choice.py --algos fa2 --groups ${AB_GROUPS:-prefill} \
             --out "/tmp/ab/fa2_${run}_$([ "$v" = . ] && echo shipped || echo "$v" | tr '=,/.' '_-__').json"; done; done 2>&1 \
           | tee "$OUT/fa2_ab.log" | grep -v "^torch_flashinfer: build"; tar -C /tmp -cf "$OUT/fa2_ab.tar" ab ;;
    tests) timeout ${TESTS_TIMEOUT:-540} python3 -m pytest -q -n 8 --timeout 300 --timeout-method thread ${TESTS_K:+-k "$TESTS_K"} ${TESTS_ARGS:-} \
             tests/test_cuda_binding.py tests/test_cuda_decode.py tests/test_cuda_fwd.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -25 ;;
    alltests) python3 -m pytest -q -n 8 --timeout 300 --timeout-method thread tests 2>&1 | tee "$OUT/all_tests.log" | tail -25 ;;
    hftests) python3 -m pytest -q tests/test_transformers.py 2>&1 | tee "$OUT/hf_tests.log" | tail -25 ;;
    tune_split) timeout ${TUNE_TIMEOUT:-540} python3 benchmarks/tune_split_kv.py --out "$OUT/split_kv.json" ${TUNE_SPLIT_ARGS:-} 2>&1 \
                  | tee "$OUT/tune_split.log" | grep -v "^torch_flashinfer: build" | tail -20 ;;
    tune_paged) for page in ${PAGES:-16 256}; do  # split counts on paged caches, through the op
                  timeout ${TUNE_TIMEOUT:-540} python3 benchmarks/tune_split_kv.py --page-size $page ${PAGED_ARGS:-} --out "/tmp/ab/split_kv_paged$page.json"; done 2>&1 \
                  | tee "$OUT/tune_paged.log" | grep -v "^torch_flashinfer: build"; tar -C /tmp -cf "$OUT/tune_paged.tar" ab ;;
    ab_split) for run in 1 2; do for tree in A B; do  # split_kv with its plan: tree A = $AB_CSRC, B = this one
                echo "== tree $tree, run $run"; [ $tree = A ] && src=$AB_CSRC || src=
                TORCH_FLASHINFER_CSRC=$src python3 benchmarks/tune_split_kv.py --variants c2 --splits 0 \
                  --out "/tmp/ab/split_$tree$run.json"; done; done 2>&1 | tee "$OUT/ab_split.log" | grep -v "^torch_flashinfer: build"
              tar -C /tmp -cf "$OUT/ab_split.tar" ab ;;
    ab_paged) for run in 1 2; do for tree in A B; do  # paged split_kv through the op, plan's splits: tree A = $AB_CSRC, B = this one
                echo "== tree $tree, run $run"; [ $tree = A ] && src=$AB_CSRC || src=
                for page in ${PAGES:-16 256}; do TORCH_FLASHINFER_CSRC=$src python3 benchmarks/tune_split_kv.py --page-size $page \
                  --splits 0 ${PAGED_ARGS:-} --out "/tmp/ab/paged_$tree${run}_p$page.json"; done; done; done 2>&1 \
                | tee "$OUT/ab_paged.log" | grep -v "^torch_flashinfer: build"; tar -C /tmp -cf "$OUT/ab_paged.tar" ab ;;
    ab_bench) for tree in A B; do  # the benchmark CLI (SUITE, SCENARIOS) on tree A = $AB_CSRC, then B = this one
                echo "== tree $tree"; [ $tree = A ] && src=$AB_CSRC || src=
                TORCH_FLASHINFER_CSRC=$src python3 -m torch_flashinfer.benchmark --suite "${SUITE:-llm}" \
                  ${SCENARIOS:+--scenarios $SCENARIOS} ${BENCH_ARGS:-} --device cuda --out "/tmp/ab/bench_$tree"
              done 2>&1 | tee "$OUT/ab_bench.log" | grep -vE "^torch_flashinfer: build|^\[#" | tail -60
              tar -C /tmp -cf "$OUT/ab_bench.tar" ab ;;
    tune) timeout ${TUNE_TIMEOUT:-540} python3 benchmarks/tune_fa2.py --out "$OUT/fa2_tiles.json" --head-dims "${TUNE_DIMS:-64,128,256}" ${TUNE_ARGS:-} 2>&1 | tee "$OUT/tune.log" | tail -60 ;;
    bench) for suite in ${SUITE:-llm}; do  # SUITE="llm seed": one run each; SCENARIOS applies to every suite
             timeout ${BENCH_TIMEOUT:-540} python3 -m torch_flashinfer.benchmark --suite $suite ${SCENARIOS:+--scenarios $SCENARIOS} \
               ${BENCH_ARGS:-} --device cuda --out /tmp/bench 2>&1 | tee "$OUT/bench_$suite.log" | grep -vE "^torch_flashinfer: build"
           done; tar -C /tmp -cf "$OUT/bench.tar" bench ;;  # one file: at most 8 come back
    ncu) ncu --clock-control none -k regex:fwd_kernel -c 1 --section SpeedOfLight --section WarpStateStats \
           --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section Occupancy python3 -c "
import torch, torch_flashinfer
q = torch.randn(4, 4096, 32, 128, device='cuda', dtype=torch.float16)
torch_flashinfer.flash_attn_func(q, q, q, causal=${NCU_CAUSAL:-False})" 2>&1 | tee "$OUT/ncu.log" | grep -vE "^==PROF==" | tail -90 ;;
    ncu_cmp) ncu --clock-control none -k regex:fwd_kernel -c 4 --section SpeedOfLight --section WarpStateStats \
           --section InstructionStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
           --section Occupancy --section LaunchStats --section MemoryWorkloadAnalysis_Tables \
           --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,lts__t_sectors_srcunit_ltcfabric.sum,lts__t_sectors_srcunit_tex.sum,lts__t_requests_srcunit_tex.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum" python3 -c "
import torch, torch_flashinfer  # ours, then SDPA's FlashAttention-2, at d=128 and d=256
from torch.nn.attention import SDPBackend, sdpa_kernel
for h, d in ${NCU_SHAPES:-((32, 128), (16, 256))}:
    q = torch.randn(4, 4096, h, d, device='cuda', dtype=torch.float16)
    torch_flashinfer.flash_attn_func(q, q, q, causal=${NCU_CAUSAL:-False})
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        qt = q.transpose(1, 2)
        torch.nn.functional.scaled_dot_product_attention(qt, qt, qt, is_causal=${NCU_CAUSAL:-False})" \
           2>&1 | grep -vE "^==PROF==" > "$OUT/ncu_cmp.log"; wc -l "$OUT/ncu_cmp.log" ;;
    ncu_short) ncu --clock-control none -k regex:"fwd_kernel|sdpa|fmha|cudnn" -c 2 --metrics \
           gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__warps_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__block_size,launch__registers_per_thread,launch__shared_mem_per_block_dynamic,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,lts__t_sectors_srcunit_tex.sum,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio \
           python3 -c "
import torch, torch_flashinfer  # short prompts (seed prefill_batch b128 x 128, causal): ours, then SDPA cuDNN
from torch.nn.attention import SDPBackend, sdpa_kernel
q, k, v = (torch.randn(128, 128, 32, 128, device='cuda', dtype=torch.float16) for _ in range(3))
torch_flashinfer.flash_attn_func(q, k, v, causal=True)
with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
    torch.nn.functional.scaled_dot_product_attention(*(x.transpose(1, 2) for x in (q, k, v)), is_causal=True)" \
           2>&1 | grep -vE "^==PROF==" > "$OUT/ncu_short.log"; tail -40 "$OUT/ncu_short.log" ;;
    ncu_hybrid) ncu --clock-control none -k regex:"fwd_kernel|fmha|cudnn|flash" -c 8 --metrics \
           gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active,launch__grid_size,launch__registers_per_thread,lts__t_sector_op_read_hit_rate.pct,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio \
           python3 -c "
import torch, torch_flashinfer  # seed hybrid, 100 requests of 128 keys, 32 heads d128: fa3, fa2, then the best SDPA per part
from torch_flashinfer.benchmark import backends, schema
for frac in (1.0, 0.5):
    case = schema.Case('hybrid', 100, 32, 32, 128, 128, 128, True, 'float16', prefill_fraction=frac)
    x = backends.make_inputs(case, torch.device('cuda'))
    for algo in ('fa3', 'fa2'): backends.torch_flashinfer(case, x, algo)()
    for q, k, v in backends.hybrid_parts(case, x): backends.sdpa_call(q, k, v, True, 'sdpa_cudnn')()" \
           2>&1 | grep -vE "^==PROF==" > "$OUT/ncu_hybrid.log"; grep -E "^  [a-zA-Z_].*\(|duration|bytes|throughput|gmma|grid_size|registers|hit_rate|stalled" "$OUT/ncu_hybrid.log" | head -90 ;;
    ncu_hybrid_stalls) ncu --clock-control none -k regex:"fwd_kernel|fprop" -c 2 --section WarpStateStats --section SchedulerStats \
           --section MemoryWorkloadAnalysis --section SourceCounters --import-source no \
           --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,gpu__time_duration.sum" python3 -c "
import torch, torch_flashinfer  # the seed's hybrid batch with prefill only: fa3, then cuDNN's prefill kernel; where warps wait
from torch_flashinfer.benchmark import backends, schema
case = schema.Case('hybrid', 100, 32, 32, 128, 128, 128, True, 'float16', prefill_fraction=1.0)
x = backends.make_inputs(case, torch.device('cuda'))
backends.torch_flashinfer(case, x, 'fa3')()
for q, k, v in backends.hybrid_parts(case, x): backends.sdpa_call(q, k, v, True, 'sdpa_cudnn')()" \
           2>&1 | grep -vE "^==PROF==" > "$OUT/ncu_hybrid_stalls.log"; grep -E "fwd_kernel|fprop|Stall|stalled|Warp Cycles|Issued|Eligible|inst_executed|duration" "$OUT/ncu_hybrid_stalls.log" | head -90 ;;
    ncu_paged) ncu --clock-control none -k regex:split_kv -c 7 --section SpeedOfLight --section MemoryWorkloadAnalysis \
           --section WarpStateStats --metrics lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sector_op_read_hit_rate.pct,dram__bytes_read.sum,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio,smsp__average_warps_issue_stalled_lg_throttle_per_issue_active.ratio \
           python3 -c "
import torch, torch_flashinfer  # decode b16 32/8 heads 8k keys: dense cache (plan: 1 split), then the same bytes
# paged (256, 16; shuffled, then in memory order; plan: 2 splits), then dense at 2 splits and page 16 in order at 1
b, hq, hk, s, d = 16, 32, 8, 8192, 128
q = torch.randn(b, 1, hq, d, device='cuda', dtype=torch.float16)
k, v = (torch.randn(b, s, hk, d, device='cuda', dtype=torch.float16) for _ in range(2))
lens = torch.full((b,), s, dtype=torch.int32, device='cuda')
torch_flashinfer.flash_attn_with_kvcache(q, k, v, cache_seqlens=lens, causal=True)
for page, shuffled in ((256, True), (16, True), (256, False), (16, False)):
    perm = torch.randperm(b * s // page, device='cuda') if shuffled else torch.arange(b * s // page, device='cuda')
    kp, vp = (x.reshape(b * s // page, page, hk, d)[torch.argsort(perm)] for x in (k, v))
    table = perm.reshape(b, s // page).to(torch.int32)
    torch_flashinfer.flash_attn_with_kvcache(q, kp, vp, cache_seqlens=lens, block_table=table, causal=True)
torch_flashinfer.flash_attn_with_kvcache(q, k, v, cache_seqlens=lens, causal=True, num_splits=2)
torch_flashinfer.flash_attn_with_kvcache(q, kp, vp, cache_seqlens=lens, block_table=table, causal=True, num_splits=1)" \
           2>&1 | grep -vE "^==PROF==" > "$OUT/ncu_paged.log"; grep -E "split_kv|Duration|DRAM Through|sectors|hit_rate|bytes_read|stalled|L2 Hit|Mem Busy|Max Bandwidth" "$OUT/ncu_paged.log" | head -100 ;;
    decode) for args in "--seqlen-k 8192 --host" "--seqlen-k 128 --heads-k 32 --host" "--seqlen-k 32768" "--batch 16" "--batch 128 --heads-k 32"; do
              python3 benchmarks/profile_decode.py $args; done 2>&1 | tee "$OUT/decode.log" ;;
    decode_ab) for run in 1 2; do for tree in A B; do  # profile_decode.py rows (DECODE_AB_ARGS, ';'-separated): tree A = $AB_CSRC, B = this one
                 [ $tree = A ] && src=$AB_CSRC || src=; short="--heads-k 32 --seqlen-k 128 --batch"  # default: the 128-key rows
                 IFS=';' read -ra rows <<< "${DECODE_AB_ARGS:-$short 1;$short 2;$short 4;$short 8}"
                 for args in "${rows[@]}"; do echo "== tree $tree run $run: $args"
                   TORCH_FLASHINFER_CSRC=$src timeout 90 python3 benchmarks/profile_decode.py $args; done
               done; done 2>&1 | grep -vE "^torch_flashinfer: build|UserWarning|_warn_once" | tee "$OUT/decode_ab.log" | grep -E "^==|ours|cudnn" ;;
    ncu_decode) ncu --clock-control none --profile-from-start off -k regex:split_kv -c 1 --section SpeedOfLight --section WarpStateStats \
           --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats python3 benchmarks/profile_decode.py --ncu 2>&1 \
           | tee "$OUT/ncu_decode.log" | grep -vE "^==PROF==" | tail -80 ;;
    ncu_dram) for cc in all none; do  # kernel time and DRAM bytes of ours and cuDNN, b1 32/8 sk8192
                ncu --clock-control none --cache-control $cc --profile-from-start off --metrics \
                  gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed \
                  python3 benchmarks/profile_decode.py --ncu; done 2>&1 | tee "$OUT/ncu_dram.log" | grep -vE "^==PROF==" | tail -60 ;;
    llama) python3 examples/llama_generate.py ${LLAMA_ARGS:-} 2>&1 | tee "$OUT/llama.log" | tail -15 ;;
    sanitize) for tool in memcheck racecheck synccheck; do  # every tensor its own cudaMalloc: memcheck sees its bounds
                PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout ${SANITIZE_TIMEOUT:-300} compute-sanitizer --tool $tool --error-exitcode 1 python3 benchmarks/sanitize_cases.py ${SANITIZE_ALGOS:-} \
                  > "$OUT/sanitize_$tool.log" 2>&1
                echo "compute-sanitizer $tool: rc=$? $(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitize_$tool.log" | tail -1)"
              done ;;
  esac
done
