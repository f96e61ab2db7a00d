"""PyTorch twin of bench/kernels.ts: the same linear and add shapes on CUDA, in f32 and f16.

Each job is {"key", "kind": "linear" | "add", "dtype": "f32" | "f16", "M", "K", "N"}: linear
times F.linear(x:[M, K], w:[N, K]), add times torch.add of two N-element vectors, both on
uniform inputs in [-1, 1). Timing: CUDA events around one call, `warmup` calls first, the median
of `reps` calls in ms. Prints one JSON object {key: ms} on its last line.

Usage (bench/kernels.ts runs it for you when python3 has torch with CUDA):
    python3 bench/torch_kernels.py '{"jobs": [{"key": "linear f16 1x4096x4096",
        "kind": "linear", "dtype": "f16", "M": 1, "K": 4096, "N": 4096}], "reps": 20, "warmup": 2}'
"""

import json
import statistics
import sys

import torch

cfg = json.loads(sys.argv[1])
dt = {"f32": torch.float32, "f16": torch.float16}
res = {}
for j in cfg["jobs"]:
    d = dt[j["dtype"]]
    if j["kind"] == "add":
        a = torch.rand(j["N"], device="cuda", dtype=d) * 2 - 1
        b = torch.rand(j["N"], device="cuda", dtype=d) * 2 - 1
        fn = lambda: torch.add(a, b)  # noqa: E731
    else:
        x = torch.rand(j["M"], j["K"], device="cuda", dtype=d) * 2 - 1
        w = torch.rand(j["N"], j["K"], device="cuda", dtype=d) * 2 - 1
        fn = lambda: torch.nn.functional.linear(x, w)  # noqa: E731
    ts = []
    for i in range(cfg["warmup"] + cfg["reps"]):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        if i >= cfg["warmup"]:
            ts.append(s.elapsed_time(e))
    res[j["key"]] = statistics.median(ts)
print(json.dumps(res))
