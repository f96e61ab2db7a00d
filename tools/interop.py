#!/usr/bin/env python3
"""Interop vectors made by Hugging Face transformers itself (issue: a plain checkpoint stays plain).

Writes tiny Qwen3 and Llama checkpoints with `save_pretrained` and, for each, transformers' own
logits over a token sequence longer than the prompt, so that `test/model/interop_test.ts` can check
that `loadModel` reproduces a plain (non-DMS) Hugging Face model exactly.

The checkpoints cover: Qwen3 and Llama; tied and untied embeddings; bf16, f16 and f32 storage;
single-file and sharded (`model.safetensors.index.json`); default, `linear` and `llama3` RoPE, in
both the transformers 4.x spelling (`rope_theta` + `rope_scaling`) and the 5.x one
(`rope_parameters`); Qwen3's head_dim != hidden_size / heads; attention and MLP biases.

Each case folder holds the checkpoint as saved (config.json, generation_config.json, weights) and
`expected.safetensors`:
  tokens      I32 [T]         prompt (first `prompt_length`) + transformers' greedy continuation
  logits      F32 [T, V]      the reloaded checkpoint's float32 logits (CPU, eager attention)
  logits_f64  F32 [T, V]      the same checkpoint run in float64 (rounded to f32), for context
  hidden      F32 [L+1, T, H] float32 hidden states (embeddings, then after each layer)
plus `meta.json` (prompt length, versions, the smallest top-1/top-2 logit gap).

The weights are re-drawn so that logits are O(1) and every top-1/top-2 gap is decisive: embeddings
N(0, 1), linear weights N(0, 1/fan_in), norm gains 1 + 0.1 N(0, 1), biases N(0, 0.1^2); the
stored (bf16/f16) weights are what the reference logits are computed from (the folder is reloaded
in float32 before the forward).

Run (the GPU machine has PyTorch 2.11 and transformers 5.17; a CPU is enough):
    python3 tools/interop.py --out testdata/interop
"""

import argparse
import json
import math
import os
import shutil

import torch
import transformers
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

PROMPT = 16  # prompt tokens
NEW = 32  # greedy continuation
VOCAB = 256
MIN_GAP = 0.002  # smallest acceptable top-1/top-2 gap, in units of max|logit| (100x the test tolerance)

LLAMA3 = {
    "rope_type": "llama3",
    "factor": 4.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}
LINEAR = {"rope_type": "linear", "factor": 2.0}

CASES = [
    # name, arch, dtype, tied, sharded, rope scaling, spelling, biases, extra config
    dict(name="qwen3_bf16_sharded", arch="qwen3", dtype="bfloat16", tied=False, sharded=True,
         rope=None, spelling="5.x", bias=False, theta=1e6),
    dict(name="qwen3_f32_tied_linear", arch="qwen3", dtype="float32", tied=True, sharded=False,
         rope=LINEAR, spelling="5.x", bias=False, theta=1e6),
    dict(name="qwen3_f16_llama3_v4", arch="qwen3", dtype="float16", tied=False, sharded=False,
         rope=LLAMA3, spelling="4.x", bias=True, theta=1e4),
    dict(name="llama_f32_tied_llama3", arch="llama", dtype="float32", tied=True, sharded=False,
         rope=LLAMA3, spelling="5.x", bias=False, theta=5e5),
    dict(name="llama_bf16_sharded_linear_v4", arch="llama", dtype="bfloat16", tied=False,
         sharded=True, rope=LINEAR, spelling="4.x", bias=True, theta=1e4),
    dict(name="llama_f16_default_v4", arch="llama", dtype="float16", tied=False, sharded=False,
         rope=None, spelling="4.x", bias=False, theta=1e4),
]


def make_config(c):
    common = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        tie_word_embeddings=c["tied"],
        attention_bias=c["bias"],
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        rope_parameters={"rope_type": "default", "rope_theta": c["theta"], **(c["rope"] or {})},
    )
    if c["arch"] == "qwen3":
        return Qwen3Config(head_dim=32, **common), Qwen3ForCausalLM
    return LlamaConfig(mlp_bias=c["bias"], **common), LlamaForCausalLM


@torch.no_grad()
def redraw(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif "embed_tokens" in name:
            p.copy_(torch.randn(p.shape, generator=g))
        elif name.endswith(".bias"):
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:  # linear weight [out, in]
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def rewrite_v4(folder, c):
    """Rewrites config.json in the transformers 4.x spelling: rope_theta + rope_scaling."""
    path = os.path.join(folder, "config.json")
    cfg = json.load(open(path))
    params = cfg.pop("rope_parameters")
    cfg["rope_theta"] = params.pop("rope_theta")
    cfg["rope_scaling"] = dict(params) if params.get("rope_type", "default") != "default" else None
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    json.dump(cfg, open(path, "w"), indent=2)


@torch.no_grad()
def forward(model, ids):
    out = model(input_ids=ids[None], output_hidden_states=True)
    return out.logits[0], torch.stack([h[0] for h in out.hidden_states])


@torch.no_grad()
def make_case(c, root, seed):
    folder = os.path.join(root, c["name"])
    shutil.rmtree(folder, ignore_errors=True)
    config, cls = make_config(c)
    torch.manual_seed(seed)
    model = cls(config).to(torch.float32)
    redraw(model, seed)
    model = model.to(getattr(torch, c["dtype"]))
    model.save_pretrained(folder, max_shard_size="40KB" if c["sharded"] else "1GB")
    if c["spelling"] == "4.x":
        rewrite_v4(folder, c)

    # reload the folder as saved, in float32, eager attention, on the CPU (no TF32)
    ref = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    ref.eval()
    g = torch.Generator().manual_seed(seed + 7)
    ids = torch.randint(0, VOCAB, (PROMPT,), generator=g)
    for _ in range(NEW):  # greedy continuation by full forwards (no cache)
        logits, _ = forward(ref, ids)
        ids = torch.cat([ids, logits[-1].argmax().reshape(1)])
    logits, hidden = forward(ref, ids)
    ref64 = ref.to(torch.float64)
    logits64, _ = forward(ref64, ids)

    top2 = logits.topk(2, dim=-1).values
    gap = (top2[:, 0] - top2[:, 1]).min().item() / logits.abs().max().item()
    if gap < MIN_GAP:
        shutil.rmtree(folder)
        return None
    save_file(
        {
            "tokens": ids.to(torch.int32).contiguous(),
            "logits": logits.float().contiguous(),
            "logits_f64": logits64.float().contiguous(),
            "hidden": hidden.float().contiguous(),
        },
        os.path.join(folder, "expected.safetensors"),
        metadata={"format": "pt"},
    )
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors") and f != "expected.safetensors")
    meta = {
        "case": c["name"],
        "architecture": c["arch"],
        "stored_dtype": c["dtype"],
        "tied": c["tied"],
        "weight_files": files,
        "rope": (c["rope"] or {"rope_type": "default"})["rope_type"],
        "rope_spelling": c["spelling"],
        "prompt_length": PROMPT,
        "sequence_length": int(ids.numel()),
        "seed": seed,
        "min_top2_gap_over_max_logit": gap,
        "max_abs_logit": logits.abs().max().item(),
        "max_abs_f32_minus_f64": (logits - logits64.float()).abs().max().item(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "command": "python3 tools/interop.py --out testdata/interop",
    }
    json.dump(meta, open(os.path.join(folder, "meta.json"), "w"), indent=2)
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="testdata/interop")
    a = ap.parse_args()
    torch.set_num_threads(4)
    os.makedirs(a.out, exist_ok=True)
    for c in CASES:
        for seed in range(1, 200):
            meta = make_case(c, a.out, seed)
            if meta:
                print(json.dumps(meta))
                break
        else:
            raise SystemExit(f"{c['name']}: no seed gives decisive top-2 gaps")


if __name__ == "__main__":
    main()
