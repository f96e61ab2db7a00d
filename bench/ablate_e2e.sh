#!/usr/bin/env bash
# How much of a decode step each lever can buy at most: the end-to-end bench with one part of the
# step switched off at a time (docs/performance.md, "At 32K", session 23). TIMING ONLY: the
# switched-off runs compute wrong tokens. On the GPU machine, from the repository root:
#
#   run(command: "bash bench/ablate_e2e.sh", carry: [".gpu"], timeout_s: 600)
#
# Elsewhere `bash bench/ablate_e2e.sh` runs the same on whatever adapter Deno finds (on a CPU
# adapter bench/generate.ts prints no tok/s). Each row is a process of its own:
#   base                     the step as committed
#   ABL_NC=1                 `combine` not dispatched
#   ABL_QK=1                 the q/k kernel (q/k norm, RoPE, the K/V entry's store) not dispatched
#   ABL_ATT=2 ABL_NC=1       `decode_online` returns after reading its page's length, no combine
#   ABL_ATT=1 ABL_NC=1       `decode_online` returns at once, no combine
#   ABL_ATT=2 ABL_NC=1 ABL_QK=1
# The switches are a temporary patch of shaders/paged_decode.wgsl, src/cache/paged_decode.ts and
# src/dms/heads_rope_qk.ts: the three files are copied aside first and put back on exit (any exit
# but SIGKILL; after one, the copies are in the folder the script names), so that nothing of the
# patch can reach a commit or the library. It needs no git.
# Environment: CTX (default 2048,32768), LIMIT (seconds a row, default 110), ARGS (more arguments of
# bench/generate.ts, e.g. `--quick` for a CPU adapter), OUT (default /tmp/ablate-out; the table goes
# to $OUT/ablate.md).
set -u
FILES="shaders/paged_decode.wgsl src/cache/paged_decode.ts src/dms/heads_rope_qk.ts"
saved=$(mktemp -d)
for f in $FILES; do
  mkdir -p "$saved/$(dirname "$f")" && cp -p "$f" "$saved/$f" || {
    echo "bench/ablate_e2e.sh: cannot save $f (run it from the repository root)" >&2
    exit 2
  }
done
echo "bench/ablate_e2e.sh: $FILES saved in $saved, put back on exit"
restore() {
  local ok=1 f
  for f in $FILES; do cp -p "$saved/$f" "$f" || ok=0; done
  if [ "$ok" = 1 ]; then rm -rf "$saved"; else echo "bench/ablate_e2e.sh: restore from $saved" >&2; fi
}
trap restore EXIT
# the GPU machine: its Vulkan loader, driver and deno (.gpu, bash ../shared/tools/gpu-pack.sh)
if [ -d /usr/local/nvidia ] && [ -f .gpu/setup.sh ]; then source .gpu/setup.sh; fi
OUT=${OUT:-/tmp/ablate-out}
mkdir -p "$OUT"
log="$OUT/ablate.md"
: >"$log"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | tee -a "$log"
python3 - <<'EOF' || exit 1
import pathlib

def patch(path, pairs):
    f = pathlib.Path(path)
    s = f.read_text()
    for anchor, add in pairs:
        assert s.count(anchor) == 1, f"{path}: anchor not found once: {anchor!r}"
        s = s.replace(anchor, add(anchor), 1)
    f.write_text(s)

patch("shaders/paged_decode.wgsl", [
    ("const NEG: f32 = -3.40282346e38;", lambda a: a + "\noverride ABL: u32 = 0u;"),
    ("  if (w >= p.pages * p.np) { return; }", lambda a: a + "\n  if (ABL == 1u) { return; }"),
    # keeps the length read alive: a store that never happens
    ("  let len = u32(workgroupUniformLoad(&sh_len));", lambda a: a +
     "\n  if (ABL == 2u) { if (len == 123456789u) { atomicStore(&pml[w], len); } return; }"),
])
patch("src/cache/paged_decode.ts", [
    ("  if (direct || fused) {", lambda a: '  if (direct || fused || Deno.env.get("ABL_NC") === "1") {'),
    ("constants: { ...c, DIRECT: direct ? 1 : 0, FUSED: fused ? 1 : 0 },", lambda a:
     'constants: { ...c, DIRECT: direct ? 1 : 0, FUSED: fused ? 1 : 0, ABL: Number(Deno.env.get("ABL_ATT") ?? "0") },'),
])
patch("src/dms/heads_rope_qk.ts", [
    ("  if (rows === 0) return;", lambda a: a +
     '\n  if (Deno.env.get("ABL_QK") === "1" && run.shader === "heads_rope_append") return;'),
])
print("bench/ablate_e2e.sh: switches patched in (reverted on exit)")
EOF
failed=0
for row in "base" "ABL_NC=1" "ABL_QK=1" "ABL_ATT=2 ABL_NC=1" "ABL_ATT=1 ABL_NC=1" \
  "ABL_ATT=2 ABL_NC=1 ABL_QK=1"; do
  echo "## $row" | tee -a "$log"
  t=$SECONDS
  vars=""
  [ "$row" = base ] || vars=$row
  # shellcheck disable=SC2086 # the row's assignments and ARGS are separate words
  env $vars timeout "${LIMIT:-110}" deno run -A bench/generate.ts --no-torch --replay on \
    --tokens 256 --variants default --rounds 2 --contexts "${CTX:-2048,32768}" ${ARGS:-} 2>&1 |
    grep -E "^\| [0-9]|rror" | tee -a "$log"
  rc=${PIPESTATUS[0]}
  echo "exit $rc after $((SECONDS - t)) s" | tee -a "$log"
  [ "$rc" = 0 ] || failed=$((failed + 1))
done
[ "$failed" = 0 ] || {
  echo "bench/ablate_e2e.sh: $failed of the rows failed (see $log)" >&2
  exit 1
}
