"""PyTorch twin of bench/dispatch_floor.ts: N kernels captured as one CUDA graph.

`tiny`: N in-place adds on a 64-element int32 tensor (one small kernel each);
`S` MB: N sums over S MB of int32 (one memory-bound reduction each, into one output), over
copies summing to >= 128 MB read in turn (as bench/dispatch_floor.ts rotates its inputs).
Prints one JSON line: {"us": {"tiny": µs per kernel, "1": ..., ...}, "torch", "device"}.
"""

import json
import sys
import time

import torch


def per_kernel_us(fn, n, reps):
    """Median µs per kernel of `fn` (which launches n kernels) replayed as a CUDA graph."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()  # warm up outside the capture
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    # replay back to back for ~300 ms first (the clock comes up), then time the reps back to
    # back, one synchronize at the end
    start = time.perf_counter()
    while time.perf_counter() - start < 0.3:
        for _ in range(8):
            g.replay()
        torch.cuda.synchronize()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
    for a, b in events:
        a.record()
        g.replay()
        b.record()
    torch.cuda.synchronize()
    times = [a.elapsed_time(b) * 1e3 / n for a, b in events]
    times.sort()
    return times[len(times) // 2]


def main():
    cfg = json.loads(sys.argv[1])
    n, reps = cfg["dispatches"], cfg["reps"]
    dev = torch.device("cuda")
    out = {}
    words = torch.zeros(64, dtype=torch.int32, device=dev)

    def tiny():
        for _ in range(n):
            words.add_(1)

    out["tiny"] = per_kernel_us(tiny, n, reps)
    for mb in cfg["sizes"]:
        # copies summing to >= 128 MB, read in turn: every sum reads HBM, not the 60 MB L2
        srcs = [torch.ones(mb * 1024 * 1024 // 4, dtype=torch.int32, device=dev)
                for _ in range(max(2, -(-128 // mb)))]
        dst = torch.zeros((), dtype=torch.int32, device=dev)

        def stream():
            for i in range(n):
                torch.sum(srcs[i % len(srcs)], 0, dtype=torch.int32, out=dst)

        out[str(mb)] = per_kernel_us(stream, n, reps)
    print(json.dumps({"us": out, "torch": torch.__version__, "device": torch.cuda.get_device_name()}))


if __name__ == "__main__":
    main()
