"""PyTorch twin of bench/generate.ts: end-to-end greedy decode tok/s with transformers' Qwen3.

Qwen3ForCausalLM built from a Qwen3Config of the same geometry as the TypeScript benchmark
(random weights, seeded, in f16 or f32; nothing is downloaded), B = 1, a `ctx`-token prompt
prefilled into a StaticCache, then `tokens` greedy decode steps two ways:

- eager: one `model(...)` call per token (plus argmax) from Python;
- graph: one decode step (forward over the static cache + argmax written into the next step's
  input, cache position advanced) captured once with torch.cuda.graphs and replayed per token.

tok/s = tokens / wall time between two torch.cuda.synchronize() calls (no readback per token;
ours reads back every 32). Prints one JSON object on its last line:
{"torch", "transformers", "device", "results": {ctx: {"eager": tok/s, "graph": tok/s}}, "errors"}.

Usage (bench/generate.ts runs it when python3 has torch with CUDA):
    python3 bench/torch_generate.py '{"layers": 28, "hidden": 1024, "heads": 16, "kvHeads": 8,
        "headDim": 128, "inter": 3072, "vocab": 151936, "contexts": [2048], "tokens": 256,
        "dtype": "f16"}'
"""

import json
import sys
import time

import torch

DTYPES = {"f16": torch.float16, "f32": torch.float32, "bf16": torch.bfloat16}


def build(cfg, max_len, dtype):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    conf = Qwen3Config(
        vocab_size=cfg["vocab"],
        hidden_size=cfg["hidden"],
        intermediate_size=cfg["inter"],
        num_hidden_layers=cfg["layers"],
        num_attention_heads=cfg["heads"],
        num_key_value_heads=cfg["kvHeads"],
        head_dim=cfg["headDim"],
        max_position_embeddings=max(4096, max_len),
        rope_theta=1e6,
        tie_word_embeddings=True,
    )
    conf._attn_implementation = "sdpa"
    torch.manual_seed(1)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(conf).to(dtype)
    model.eval()
    return model, conf


def static_cache(conf, max_len, dtype):
    from transformers import StaticCache

    try:  # transformers >= 4.56 / 5.x
        return StaticCache(config=conf, max_cache_len=max_len)
    except TypeError:
        return StaticCache(config=conf, max_batch_size=1, max_cache_len=max_len,
                           device="cuda", dtype=dtype)


@torch.inference_mode()
def prefill(model, cache, ctx, vocab):
    ids = (torch.arange(ctx, device="cuda") * 7919 % vocab).view(1, ctx)
    chunk = 4096
    logits = None
    for s in range(0, ctx, chunk):
        e = min(ctx, s + chunk)
        pos = torch.arange(s, e, device="cuda")
        logits = model(input_ids=ids[:, s:e], past_key_values=cache, cache_position=pos,
                       position_ids=pos.view(1, -1), use_cache=True,
                       logits_to_keep=1).logits
    return logits[:, -1].argmax(-1).view(1, 1)


@torch.inference_mode()
def eager(model, conf, ctx, n, dtype):
    cache = static_cache(conf, ctx + n + 1, dtype)
    tok = prefill(model, cache, ctx, conf.vocab_size)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(n):
        pos = torch.tensor([ctx + i], device="cuda")
        out = model(input_ids=tok, past_key_values=cache, cache_position=pos,
                    position_ids=pos.view(1, 1), use_cache=True)
        tok = out.logits[:, -1].argmax(-1).view(1, 1)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


@torch.inference_mode()
def graph(model, conf, ctx, n, dtype):
    cache = static_cache(conf, ctx + n + 8, dtype)
    tok = prefill(model, cache, ctx, conf.vocab_size)
    ids = tok.clone()
    pos = torch.tensor([ctx], device="cuda")

    def step():
        out = model(input_ids=ids, past_key_values=cache, cache_position=pos,
                    position_ids=pos.view(1, 1), use_cache=True)
        ids.copy_(out.logits[:, -1].argmax(-1).view(1, 1))
        pos.add_(1)

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):  # warm-up on a side stream (writes positions ctx..ctx+2)
            step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        g.replay()
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main():
    cfg = json.loads(sys.argv[1])
    dtype = DTYPES[cfg.get("dtype", "f16")]
    n = int(cfg["tokens"])
    import transformers

    results, errors = {}, {}
    for ctx in cfg["contexts"]:
        model, conf = build(cfg, ctx + n + 16, dtype)
        r = {}
        for name, fn in (("eager", eager), ("graph", graph)):
            try:
                fn(model, conf, ctx, min(n, 8), dtype)  # warm-up (kernels, allocator)
                r[name] = fn(model, conf, ctx, n, dtype)
            except Exception as e:  # noqa: BLE001 - reported per row, the other rows still run
                errors[f"{ctx} {name}"] = f"{type(e).__name__}: {e}"[:300]
        results[str(ctx)] = r
        print(f"ctx {ctx}: {r}", file=sys.stderr)
        del model
        torch.cuda.empty_cache()
    print(json.dumps({
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": torch.cuda.get_device_name(),
        "results": results,
        "errors": errors,
    }))


if __name__ == "__main__":
    main()
