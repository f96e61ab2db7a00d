#!/usr/bin/env bash
# The decode-attention variants that are built and tested but not yet timed on a GPU, against the
# defaults, on the GPU machine in one device call (~6 minutes). From the repository root:
#
#   deno run -A tools/kernel_stats/spv.ts --out .device/stats --decode   # here, first
#   run(command: "bash bench/h200_ab.sh", carry: [".gpu", ".device/stats"], timeout_s: 600)
#
# 1. registers a thread of every decode_online variant (FUSED, EARLY; tools/kernel_stats): a variant
#    that raises G 2's 128 or G 4's 168 costs occupancy (docs/performance.md, session 12);
# 2. bench/attention.ts, one layer, f16, G 2 (Qwen3-0.6B) and G 4, the routed kernel and each variant
#    timed interleaved (A B A B): `--other-combine fused` (no combine dispatch), `--other-early`
#    (the first block's loads beside the visibility reads), both;
# 3. bench/generate.ts end to end at 2K and 32K (B = 1, dense and DMS at forced CR 8), the variants
#    alternating round by round in one process (`--variants`).
# What adopting a variant takes: it wins end to end at 32K DMS without losing at 2K (the 32K target
# needs ~8.4 µs a layer off DMS attention, docs/performance.md "At 32K"); then make it the default in
# flashDecodeDefaults' documented values and the kernel, and log the numbers in docs/performance.md.
set -u
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
if [ -d .device/stats ]; then
  step 60 bash tools/kernel_stats/run.sh .device/stats
fi
A="deno run -A bench/attention.ts --dtypes f16 --crs 8 --no-old --no-torch --other --contexts 4096,32768 --batches 1,4"
for g in 2 4; do
  step 45 $A --g "$g" --other-combine fused
  step 45 $A --g "$g" --other-early
  step 45 $A --g "$g" --other-combine fused --other-early
done
for c in 2048 32768; do
  step 110 deno run -A bench/generate.ts --no-torch --replay on --tokens 256 --contexts "$c" \
    --variants "default;combine=fused;early=on;combine=fused,early=on" --rounds 2
done
echo "total $((SECONDS - t0)) s" | tee -a "$log"
