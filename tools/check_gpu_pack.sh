#!/usr/bin/env bash
# Checks here, before a device call, that the GPU pack (.gpu: deno, the Vulkan loader and the npm
# cache, from `bash ../shared/tools/gpu-pack.sh`, often pruned to fit the 64 MiB a call carries)
# runs the benches offline, as the GPU machine must: it has no network, and a pack whose
# deno.lock does not match its deno.json makes deno resolve every npm package again and fail at
# once (`dns error`; session 24 lost its one machine so). It copies the tracked tree and the
# pack's npm cache to a temporary folder (the pack itself is not touched), applies
# .gpu/deno.json and .gpu/deno.lock as .gpu/setup.sh does there, and loads each entry point with
# `--help` behind a proxy that refuses every connection, so that a download fails as it does there.
#
#   bash tools/check_gpu_pack.sh [ENTRY.ts ...]   (default: the bench entry points)
#
# Environment: DENO (default `deno`). Exit 0: every entry loads; 1: one does not (named, with
# deno's first error line); 2: no pack here, or not run from the repository root.
set -u
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [ ! -f .gpu/deno.json ] || [ ! -d .gpu/deno-dir ] || [ ! -d bench ]; then
  echo "tools/check_gpu_pack.sh: no .gpu pack here; run it from the repository root after" \
    "bash ../shared/tools/gpu-pack.sh" >&2
  exit 2
fi
deno=${DENO:-deno}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git ls-files -z | tar --null -cf - -T - | tar -xf - -C "$tmp/"
cp -r .gpu/deno-dir "$tmp/.deno-dir"
cp .gpu/deno.json "$tmp/deno.json"
if [ -f .gpu/deno.lock ]; then cp .gpu/deno.lock "$tmp/deno.lock"; fi
if [ $# -gt 0 ]; then
  entries=("$@")
else
  entries=(bench/main.ts bench/attention.ts bench/generate.ts bench/chains.ts bench/prefill.ts
    bench/kernels.ts bench/dispatch_floor.ts tools/kernel_stats/spv.ts)
fi
closed=http://127.0.0.1:9 # no network: every request refused, as on the GPU machine
fail=0
for e in "${entries[@]}"; do
  if (cd "$tmp" && DENO_DIR="$tmp/.deno-dir" NO_COLOR=1 NO_PROXY='' HTTPS_PROXY="$closed" \
    HTTP_PROXY="$closed" "$deno" run -A "$e" --help >/dev/null 2>"$tmp/err"); then
    echo "ok   $e"
  else
    echo "FAIL $e: $(grep -m1 -i 'error' "$tmp/err" || head -1 "$tmp/err")"
    fail=1
  fi
done
exit $fail
