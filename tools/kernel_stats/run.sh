#!/usr/bin/env bash
# Registers and shared memory of our kernels on the GPU machine, step 2 of 2 (step 1, with its usage:
# tools/kernel_stats/spv.ts). From the repository root, through the device tool:
#   run(command: "bash tools/kernel_stats/run.sh .device/stats", carry: [".gpu", ".device/stats"])
# Builds vkstats.c there (gcc, the carried Vulkan headers, the loader from .gpu) and prints one line
# per kernel: name, registers a thread, shared memory bytes a workgroup; the driver's full report
# goes to $OUT/vkstats.txt.
set -eu
dir=${1:-.device/stats}
source .gpu/setup.sh
gcc -O1 -I "$dir/inc" -o /tmp/vkstats tools/kernel_stats/vkstats.c -l:libvulkan.so.1
cd "$dir/spv"
# shellcheck disable=SC2046
/tmp/vkstats $(cat args.txt) > "${OUT:-/tmp}/vkstats.txt"
awk '/^device|^pipelineExecutable/{print} /^==/{n=$2} /Register Count/{r=$4}
     /Shared Memory Size/{printf "%-40s registers %4d  shared %6d B\n", n, r, $5}' "${OUT:-/tmp}/vkstats.txt"
