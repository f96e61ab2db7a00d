"""PyTorch twin of bench/attention.ts: dense decode attention with PyTorch's SDPA on CUDA.

One query token per sequence over a contiguous KV cache, GQA (query head h*G+g uses KV head h,
the HF order), the same shapes and dtypes as the TypeScript benchmark's dense rows:

    q:[B, Hkv*G, 1, D]  k, v:[B, Hkv, S, D]  -> out:[B, Hkv*G, 1, D]
    F.scaled_dot_product_attention(q, k, v, enable_gqa=True)   (scale D**-0.5)

Timing: CUDA events around `iters` back-to-back calls after `warmup` calls, median over `reps`
samples, reported in ms per call ("times": eager, each call launched by the host). The same
`iters` calls are then captured as one CUDA graph and replayed (`graph`: the GPU's own time, no
launch gaps; null with a message in "errors" where capture fails). A job's "copies" (default 1)
makes that many identical caches the calls take in turn, so that a cache smaller than the L2 is
read from memory (bench/attention.ts --cold). Prints one JSON object on its
last line: {"torch": version, "device": name, "times": {key: ms or null}, "graph": {key: ms or
null}, "errors": {key: message}}.

Usage (bench/attention.ts runs it for you when python3 has torch with CUDA):
    python3 bench/torch_attention.py '{"jobs": [{"key": "k", "B": 1, "Hkv": 8, "G": 4,
        "S": 32768, "D": 128, "dtype": "f16"}], "warmup": 20, "iters": 50, "reps": 7}'
"""

import json
import statistics
import sys

import torch
import torch.nn.functional as F

DTYPES = {"f16": torch.float16, "f32": torch.float32, "bf16": torch.bfloat16}


def sdpa(q, k, v):
    """Dense GQA decode attention; repeats K/V per query head on torch < 2.5 (no enable_gqa)."""
    try:
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    except TypeError:
        g = q.shape[1] // k.shape[1]
        return F.scaled_dot_product_attention(
            q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1)
        )


def median_ms(run, reps, iters):
    """Median ms per call over `reps` samples of `run()` (which makes `iters` calls)."""
    samples = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        run()
        e.record()
        torch.cuda.synchronize()
        samples.append(s.elapsed_time(e) / iters)
    return statistics.median(samples)


def time_job(job, warmup, iters, reps):
    """Median ms per call of SDPA for one shape: (eager, CUDA graph or the capture's error)."""
    dt = DTYPES[job["dtype"]]
    B, Hkv, G, S, D = job["B"], job["Hkv"], job["G"], job["S"], job["D"]
    n = max(1, int(job.get("copies", 1)))
    q = torch.randn(B, Hkv * G, 1, D, device="cuda", dtype=dt)
    k = torch.randn(B, Hkv, S, D, device="cuda", dtype=dt)
    v = torch.randn(B, Hkv, S, D, device="cuda", dtype=dt)
    ks = [k] + [k.clone() for _ in range(n - 1)]
    vs = [v] + [v.clone() for _ in range(n - 1)]
    if n > 1:
        iters = -(-iters // n) * n  # whole rounds over the copies

    def calls():
        for i in range(iters):
            sdpa(q, ks[i % n], vs[i % n])

    def eager():
        calls()

    for i in range(warmup):
        sdpa(q, ks[i % n], vs[i % n])
    torch.cuda.synchronize()
    eager_ms = median_ms(eager, reps, iters)
    try:
        # Warm-up on a side stream before capture, as torch.cuda.graphs recommends.
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                sdpa(q, ks[i % n], vs[i % n])
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            calls()
        for _ in range(3):
            graph.replay()
        torch.cuda.synchronize()
        graph_ms = median_ms(graph.replay, reps, iters)
        del graph
    except Exception as e:  # capture unsupported for this shape or build: eager stands alone
        graph_ms = f"graph capture: {type(e).__name__}: {e}".splitlines()[0]
    del q, k, v, ks, vs
    torch.cuda.empty_cache()
    return eager_ms, graph_ms


def main():
    cfg = json.loads(sys.argv[1])
    times, graphs, errors = {}, {}, {}
    for job in cfg["jobs"]:
        key = job["key"]
        try:
            eager_ms, graph_ms = time_job(
                job, cfg.get("warmup", 20), cfg.get("iters", 50), cfg.get("reps", 7)
            )
            times[key] = eager_ms
            graphs[key] = graph_ms if isinstance(graph_ms, float) else None
            if not isinstance(graph_ms, float):
                errors[key] = graph_ms
        except Exception as e:  # out of memory, unsupported dtype: report, keep going
            times[key] = graphs[key] = None
            errors[key] = f"{type(e).__name__}: {e}".splitlines()[0]
            torch.cuda.empty_cache()
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "device": torch.cuda.get_device_name(),
                "times": times,
                "graph": graphs,
                "errors": errors,
            }
        )
    )


if __name__ == "__main__":
    main()
