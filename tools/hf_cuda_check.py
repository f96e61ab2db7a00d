# Where does a ~1e-4-relative difference against transformers come from? Same checkpoint, same tokens:
# transformers on the CPU (eager, f32) is the committed oracle (tools/interop.py); here its CUDA paths,
# with and without TF32 matmuls. Run on the GPU machine: python3 tools/hf_cuda_check.py qwen3_bf16_sharded
import torch, sys
from transformers import AutoModelForCausalLM
from safetensors.torch import load_file
for name in sys.argv[1:]:
    d = f"testdata/interop/{name}"
    e = load_file(f"{d}/expected.safetensors")
    ids = e["tokens"].long()[None]
    want = e["logits"]
    mx = want.abs().max().item()
    for dev, attn, tf32 in [("cpu", "sdpa", False), ("cuda", "eager", False), ("cuda", "sdpa", False), ("cuda", "sdpa", True), ("cuda", "eager", True)]:
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation=attn).to(dev)
        with torch.no_grad():
            got = m(input_ids=ids.to(dev)).logits[0].float().cpu()
        err = (got - want).abs().max().item()
        print(f"{name} {dev} {attn} tf32={tf32}: max|diff| {err:.2e} relative {err/mx:.2e} argmax-equal {(got.argmax(-1)==want.argmax(-1)).sum().item()}/{want.shape[0]}")
    print("default float32_matmul_precision:", torch.get_float32_matmul_precision())
