#!/usr/bin/env bash
# The decode-attention variants kept as knobs (timed in session 16 on the H200 and not adopted:
# docs/performance.md, "Decode attention"), against the defaults (and the session-15 prefill
# change), on the GPU machine in two device calls (~12 minutes), to re-time them after a kernel
# change. From the repository root:
#
#   deno run -A tools/kernel_stats/spv.ts --out .device/stats --decode   # here, first
#   run(command: "bash bench/h200_ab.sh kernels", carry: [".gpu", ".device/stats"], timeout_s: 600)
#   run(command: "bash bench/h200_ab.sh e2e", carry: [".gpu"], timeout_s: 600)   # within 30 s
#
# `kernels` is parts 1 and 2 below and the prefill bench (~6 minutes), `e2e` part 3 (~6 minutes); no
# argument runs all three (over one call's 600 s when every step runs to its limit).
#
# 1. registers a thread of every decode_online variant (FUSED, EARLY; tools/kernel_stats): a variant
#    that raises G 2's 128 or G 4's 168 costs occupancy (docs/performance.md, session 12);
# 2. bench/attention.ts, one layer, f16, G 2 (Qwen3-0.6B) and G 4, the routed kernel and each variant
#    timed interleaved (A B A B): `--other-combine fused` (no combine dispatch), `--other-early`
#    (the first block's loads beside the visibility reads), both, and at G 2 `--other-workgroups 640`;
# 3. bench/generate.ts end to end at 2K and 32K (B = 1, dense and DMS at forced CR 8), the variants
#    alternating round by round in one process (`--variants`).
# workgroups=640: at G 2 a block is 32 keys and a DMS page at 32K holds ~4.1K (CR 8) to ~4.6K (the
# attention bench's CR 7.1) live keys. With the default 512 workgroups (64 splits a page at B = 1) a
# page over 64 x 64 = 4096 keys takes splits of 65+ keys: three blocks a split instead of two, and
# the dispatch waits for its slowest page. 640 allows 80 splits a page; the GPU then still cuts
# splits of at least 64 keys (KMIN), so pages up to 5120 keys take two blocks a split and the extra
# splits stay empty; but one wave holds 528 workgroups (4 an SM x 132), so pages over 4224 keys need
# a second wave, likely dearer than the third block: expect a gain only for pages of 4097-4224 keys
# (end to end at CR 8) and a loss at the attention bench's ~4.6K. workgroups=528 (66 splits a page,
# one wave at most) takes the 4097-4224 band without a second wave. Dense plans the same splits.
# Each generation prefills afresh: at 32K ~9 s dense and ~4 s DMS, so 6 variants x 2 rounds ~170 s.
# What adopting a variant takes: it wins end to end at 32K DMS without losing at 2K (the 32K target
# needs ~8.4 µs a layer off DMS attention, docs/performance.md "At 32K"); then make it the default in
# flashDecodeDefaults' documented values and the kernel, and log the numbers in docs/performance.md.
set -u
part=${1:-all}
case "$part" in
all | kernels | e2e) ;;
*)
  echo "bench/h200_ab.sh: the part must be kernels, e2e or nothing (all), got '$part'" >&2
  exit 2
  ;;
esac
source .gpu/setup.sh
OUT=${OUT:-/tmp/ab-out}
mkdir -p "$OUT"
log="$OUT/ab.md"
: >"$log"
t0=$SECONDS
step() { # limit command...
  local limit=$1
  shift
  echo "## $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$log"
}
if [ "$part" != e2e ]; then
  if [ -d .device/stats ]; then
    step 60 bash tools/kernel_stats/run.sh .device/stats
  fi
  A="deno run -A bench/attention.ts --dtypes f16 --crs 8 --no-old --no-torch --other --contexts 4096,32768 --batches 1,4"
  for g in 2 4; do
    step 45 $A --g "$g" --other-combine fused
    step 45 $A --g "$g" --other-early
    step 45 $A --g "$g" --other-combine fused --other-early
  done
  step 45 $A --g 2 --other-workgroups 640
  # The prefill kernels now skip keys no query of a tile may see (session 15): against the 18.1
  # TFLOP/s f16 32K dense row of docs/performance.md, and DMS, no loss expected.
  step 60 deno run -A bench/prefill.ts --contexts 4096,32768 --tiled-max 4096
fi
if [ "$part" != kernels ]; then
  V="default;combine=fused;early=on;combine=fused,early=on;workgroups=528;workgroups=640"
  G="deno run -A bench/generate.ts --no-torch --replay on --tokens 256 --variants $V --rounds 2"
  step 60 $G --contexts 2048
  step 400 $G --contexts 32768
fi
echo "total $((SECONDS - t0)) s" | tee -a "$log"
