#!/usr/bin/env bash
# The questions about decode attention that are open (docs/performance.md, sessions 21 and 22), on
# the GPU machine in up to three device calls. From the repository root:
#
#   deno run -A tools/kernel_stats/spv.ts --out .device/stats --decode   # here, first, then
#   tar cJf .device/stats.tar.xz -C .device stats    # 0.15 MB: the folder's 7.5 MB overflow a call
#   run(command: "bash bench/h200_ab.sh cold", carry: [".gpu", ".device/stats.tar.xz"], timeout_s: 600)
#   run(command: "bash bench/h200_ab.sh e2e", carry: [".gpu"], timeout_s: 600)     # within 30 s
#   run(command: "bash bench/h200_ab.sh table", carry: [".gpu"], timeout_s: 600)   # an H200 only
#   run(command: "bash bench/h200_ab.sh heads", carry: [".gpu"], timeout_s: 600)   # any card
#
# No argument runs cold and e2e (over one call's 600 s when every step runs to its limit).
#
# Session 23 (an H100) ran cold and e2e: EARLY changed nothing, J 8 lost (182-255 registers a
# thread), all three knobs lost; none adopted (docs/performance.md, "Decode attention", session
# 23). Session 25 (an H200) ran heads and table: the head split lost (1.3-1.8x slower everywhere,
# not adopted), and the chained table is in docs/performance.md, session 25. The parts stay
# runnable to repeat them on another card.
#
# cold (~2 minutes on the H100, 560 s of limits): registers a thread of every decode_online
#   variant (tools/kernel_stats, when .device/stats came along; session 23: J 8 takes G 2 from 4
#   workgroups an SM to 2), then two knobs that were only ever timed warm, timed from memory as a
#   decode step reads its cache
#   (`bench/attention.ts --cold 256`: copies of the cache spanning 256 MB, each step on the next;
#   the warm columns come in the same rows), each interleaved with the defaults, G 2 and G 4, 4K
#   and 32K, B = 1 and 4:
#   - `--other-early`: the first block's K/V loads beside the (position, mark) reads, one link of
#     the dependent chain fewer;
#   - `--other-loads 8`: at G 2 a block is then 64 keys, so the DMS split of 65-80 keys at 32K
#     takes two blocks, not three (each block one memory latency of the chain).
#   Then both at G 2 with splits of at most 64 keys (DMS 32K B = 1 only): one block a split.
#   Each row's progress line names its plan (the blocks a split walks), and the chained and cold
#   columns time --other interleaved with the defaults. docs/performance.md (session 22) counts
#   the dependent links each variant should leave: 6 at G 2 by default, 3 with all three knobs.
#   Session 21 (H100) measured cold DMS 32K B = 1 at 26.1 µs (G 4) and 27.9 (G 2) against 17.5 and
#   14.4 warm; PyTorch over the same keys 14.1-14.5 cold.
# e2e (~5 minutes): bench/generate.ts at 2K and 32K (B = 1, dense and DMS at forced CR 8), the
#   variants alternating round by round in one process (`--variants`, bench/_variants.ts): the
#   same two knobs, both together, and both with splits of at most 64 keys at 32K DMS (640
#   workgroups planned: 80 splits a page, of at least 64 keys, so a page of up to 5120 live keys
#   is one block a split: with EARLY its only K/V loads go out beside the (position, mark) reads;
#   the price, a second wave past 528 busy workgroups if J 8 keeps G 2 at 4 an SM). End to end
#   every layer's cache is read from memory (28 layers of ~17 MB at 32K DMS), so this is the
#   measurement that decides; the 32K target needs DMS attention near 7.5 µs a layer
#   (docs/performance.md, "At 32K").
# heads (~1 minute on the H200, 440 s of limits; session 24's head split; session 25: it lost):
#   G 4 run as two neighbouring G 2 workgroups a page (`--other-heads 2`: 128 registers a thread, 4
#   workgroups an SM, each K/V word read twice, the repeat meant to come from the L2), interleaved
#   with the default, with the PyTorch twin (chained / graph: the dense <= 1.2x target), 32K and
#   128K, B = 1 and 4; then from memory (`--cold 256`, 32K) and with half the splits
#   (`--other-max-keys 1024`), then G 2 as two G 1 workgroups (32K, from cache). Adopt it at G 4
#   where it wins dense and DMS, chained and cold.
# table (~2 minutes, an H200 only): the chained decode-attention table with its PyTorch twin,
#   G 4 (`bench/h200.sh attention`) and G 2 (session 25 ran it).
# What adopting a knob takes: it wins end to end at 32K DMS without losing at 2K or dense; then
# make it the default (flashDecodeDefaults' documented values, src/cache/paged_decode_plan.ts) and
# log the numbers in docs/performance.md.
set -u
part=${1:-all}
case "$part" in
all | cold | e2e | table | heads) ;;
*)
  echo "bench/h200_ab.sh: the part must be cold, e2e, table, heads or nothing (cold and e2e), got '$part'" >&2
  exit 2
  ;;
esac
source .gpu/setup.sh
OUT=${OUT:-/tmp/ab-out}
mkdir -p "$OUT"
log="$OUT/ab.md"
: >"$log"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
t0=$SECONDS
step() { # limit command...
  local limit=$1
  shift
  echo "## $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$log"
}
if [ "$part" = all ] || [ "$part" = cold ]; then
  if [ ! -d .device/stats ] && [ -f .device/stats.tar.xz ]; then
    tar xJf .device/stats.tar.xz -C .device
  fi
  if [ -d .device/stats ]; then
    step 60 bash tools/kernel_stats/run.sh .device/stats
  fi
  A="deno run -A bench/attention.ts --dtypes f16 --crs 8 --reps 5 --no-old --no-torch --cold 256 --other --contexts 4096,32768 --batches 1,4"
  for g in 2 4; do
    step 110 $A --g "$g" --other-early
    step 110 $A --g "$g" --other-loads 8
  done
  # The three-link chain at G 2 (one block a split, its loads beside the (position, mark) reads),
  # on the row that decides: DMS 32K B = 1 (the dense row comes along).
  step 60 ${A%% --contexts*} --contexts 32768 --batches 1 --g 2 --other-early --other-loads 8 \
    --other-max-keys 512 --other-workgroups 640
fi
if [ "$part" = all ] || [ "$part" = e2e ]; then
  V="default;early=on;loads=8;loads=8,early=on;loads=8,early=on,maxKeys=512,workgroups=640"
  G="deno run -A bench/generate.ts --no-torch --replay on --tokens 256 --variants $V --rounds 2"
  step 60 $G --contexts 2048
  step 300 $G --contexts 32768
fi
if [ "$part" = heads ]; then
  H="deno run -A bench/attention.ts --dtypes f16 --crs 8 --reps 5 --no-old --g 4 --other --other-heads 2"
  step 200 $H --contexts 32768,131072 --batches 1,4 --json "$OUT/heads.json"
  step 100 $H --no-torch --cold 256 --contexts 32768 --batches 1,4
  step 80 $H --no-torch --other-max-keys 1024 --contexts 32768,131072 --batches 1,4
  # G 2 as two G 1 workgroups a page (the end-to-end model's G): 4 workgroups an SM already
  step 60 ${H/--g 4/--g 2} --no-torch --contexts 32768 --batches 1,4
fi
if [ "$part" = table ]; then
  case "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)" in
  *H200*) ;;
  *) echo "bench/h200_ab.sh table: not an H200; the H100's table is in docs/performance.md" | tee -a "$log" ;;
  esac
  OUT="$OUT/table" bash bench/h200.sh attention >/dev/null 2>&1
  cat "$OUT/table/bench.md" >>"$log"
  step 200 deno run -A bench/attention.ts --dtypes f16 --crs 8 --reps 5 --no-old --g 2 \
    --contexts 4096,32768,131072 --batches 1,4 --json "$OUT/g2.json"
fi
echo "total $((SECONDS - t0)) s" | tee -a "$log"
