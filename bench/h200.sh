#!/usr/bin/env bash
# The full bench with its PyTorch twins on the GPU machine (one H200), for the lead to run with
# the device tool from the repository root:
#
#   run(command: "bash bench/h200.sh attention prefill kernels", timeout_s: 600)
#   run(command: "bash bench/h200.sh skinny e2e chains floor", timeout_s: 600)
#
# Prepare the pack here first: `bash tools/prune_gpu_pack.sh` (a fresh one is 75 MB, over the 64 MiB a
# call carries), then `bash tools/check_gpu_pack.sh` (the GPU machine has no network).
# It sources .gpu/setup.sh (Vulkan loader, NVIDIA ICD, deno on PATH), then runs each section of
# bench/main.ts under its own time limit (13 minutes of limits in all, about 7 minutes of run on an
# H100 on 2026-12-05: more than one device call's 600 s allow, so name the sections to run, as
# above), appending the markdown to $OUT/bench.md and writing $OUT/<section>.json (8 files back;
# the device tool returns at most 8).
# A section that hits its limit is reported in bench.md and the others still run. The twins
# (bench/torch_attention.py, bench/torch_generate.py, the torch part of bench/kernels.ts) run
# when `python3 -c "import torch"` works there; torch_generate.py also needs transformers.
set -u
source .gpu/setup.sh
OUT=${OUT:-/tmp/bench-out}
mkdir -p "$OUT"
md="$OUT/bench.md"
: >"$md"
{
  echo "# deno task bench on $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null)"
  python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tail -1
  python3 -c "import transformers; print('transformers', transformers.__version__)" 2>&1 | tail -1
  echo
} | tee -a "$md"

# The SM clock, sampled every 200 ms while the sections run: the H200 drops it from 1980 to 345
# MHz after ~3.5 s of light load (bench/dispatch_floor.ts), so each section reports how its samples
# spread (setup phases, Python start-up included, idle at the low clock by design).
clocks=/tmp/bench-clocks.csv
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=clocks.sm --format=csv,noheader,nounits -lms 200 >"$clocks" 2>/dev/null &
  clock_pid=$!
  trap 'kill "$clock_pid" 2>/dev/null' EXIT
fi

wanted=" $* "
section() { # name seconds args...
  local name=$1 limit=$2
  shift 2
  [ "$wanted" = "  " ] || [[ "$wanted" == *" $name "* ]] || return 0
  local t=$SECONDS
  local from=0
  [ -f "$clocks" ] && from=$(wc -l <"$clocks")
  timeout "$limit" deno run -A bench/main.ts --full --sections "$name" --json "$OUT/$name.json" \
    -- "$@" 2>&1 | tee -a "$md"
  local rc=${PIPESTATUS[0]}
  echo "section $name: exit $rc after $((SECONDS - t)) s (limit $limit s)" | tee -a "$md"
  if [ -s "$clocks" ]; then
    tail -n +"$((from + 1))" "$clocks" | awk -v n="$name" '{if ($1 >= 1900) hi++}
      END {if (NR) printf "section %s: SM clock samples: %d, %d %% at >= 1900 MHz\n", n, NR, 100 * hi / NR}' |
      tee -a "$md"
  fi
  echo | tee -a "$md"
}

# (a) decode attention: dense vs DMS at forced CR 2/4/8, 4K-128K, B 1/4/32, f16 and f32, with the
# chained column and the PyTorch twin (eager, CUDA graph, over DMS's keys). Without the v2 kernel
# (--no-old): timing it beside every row overran 110 s on 2026-12-05 (an H100) before the twin ran.
# Caches under the L2 are timed from the L2 here (every row repeats one cache); to time them from
# memory as a decode step reads them, run bench/attention.ts with `--cold 256` on its own (copies
# of each cache spanning 256 MB; docs/performance.md, session 21).
section attention 240 --contexts 4096,32768,131072 --batches 1,4,32 --crs 2,4,8 --reps 5 --no-old
# (b) prefill attention TFLOP/s: flash vs the tiled path (tiled only at 4K: it is ~13 s at 32K).
section prefill 60 --contexts 4096,32768 --tiled-max 4096
# (c) matmul / GEMV at the model's shapes, incl. weights past the 60 MB L2 (--reps 10 overran 70 s
# on 2026-12-03: the host-side random weights of the 8B shapes are slow to make), and the GEMM rows
# (tiled vs tiled128 / tiled128x64 at 512, 2048, 4096 x 4096 x 4096; ~30 s more, hence 130).
section kernels 130 --reps 3
# (c) linear at decode-batch row counts (parallel chains): gemv16 / tiled / gemv16wide / skinny at
# M 4-64 of Qwen3-0.6B's shapes, weights past the L2; 256 calls a sample keep the clock up.
section skinny 90 --calls 256
# (d, e) end to end at 2K, B = 1, dense and DMS at forced CR 8; dispatches/syncs per token; the
# PyTorch twin. (32K: 70 / 90 tok/s on 2026-12-03, but its four 28-layer prefills fill the limit
# before the twin runs: `--contexts 32768 --no-torch` on its own.)
section e2e 110 --contexts 2048 --tokens 256
# (f) parallel chains at 2K from one prompt, B 8 and 64, within a 2 GB KV budget (dense fits B = 8,
# DMS at CR 8 fits 64). At 8K only dense B = 8 finished within 75 s on 2026-12-03.
section chains 80 --contexts 2048 --batches 8,64 --tokens 64 --budget-gb 2 --max-seconds 60
# What a dispatch costs the GPU (with and without a barrier, tiny and 1-64 MB kernels) and the
# decode step's GEMVs in the same back-to-back regime; the PyTorch CUDA-graph twin.
section floor 60
echo "total $SECONDS s" | tee -a "$md"
