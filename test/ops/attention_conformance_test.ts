// attention() against golden vectors from NVIDIA's reference (testdata/conformance, cases C1/C2):
// prefill and decode attention outputs are one dense attention over all T tokens with the SPEC
// §5.1 rule. Every kernel, and the f64 reference, must reproduce them.
import { decodeSafetensors } from "../../src/io/safetensors.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { attention, type AttentionKernel, attentionReference } from "../../src/ops/attention.ts";
import { assertClose, gpu, GPU_TEST } from "../_util.ts";

const KERNELS: AttentionKernel[] = ["naive", "flash"];

const CONFORMANCE = new URL("../../testdata/conformance/", import.meta.url);

/** A case's tensors by name (the library's safetensors decoder; F32 and I32 here). */
async function readCase(url: URL): Promise<Map<string, Float32Array | Int32Array>> {
  const { tensors } = decodeSafetensors(await Deno.readFile(url), url.pathname);
  const out = new Map<string, Float32Array | Int32Array>();
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype === "F32" || t.dtype === "I32") out.set(name, t.data);
  }
  return out;
}

for (const name of ["C1_attn_single_chunk", "C2_attn_chunked_padded_b2"]) {
  const dir = new URL(`${name}/`, CONFORMANCE); // vendored: a missing case fails, never skips
  Deno.test({
    name: `attention() reproduces conformance case ${name} (SPEC §5.1 prefill and decode outputs)`,
    ...GPU_TEST,
    fn: async () => {
      const meta = JSON.parse(await Deno.readTextFile(new URL("case.json", dir)));
      const t = await readCase(new URL("case.safetensors", dir));
      const B: number = meta.batch, Hkv: number = meta.heads_kv, G: number = meta.gqa_factor;
      const D: number = meta.head_dim,
        P: number = meta.prefill_len,
        N: number = meta.num_decode_steps;
      const T = P + N, Hq = Hkv * G, W = meta.cache_window - 1; // SPEC §5.1: Wc = W + 1
      // q is stored [B*Hkv, T, G, D] (row b*Hkv+h, query head h*G+g) -> [B, Hq, T, D].
      const qc = t.get("q")!, q = new Float32Array(B * Hq * T * D);
      for (let bh = 0; bh < B * Hkv; bh++) {
        for (let s = 0; s < T; s++) {
          for (let g = 0; g < G; g++) {
            const src = ((bh * T + s) * G + g) * D;
            q.set(qc.subarray(src, src + D), ((bh * G + g) * T + s) * D);
          }
        }
      }
      // mark(i) = d(i+1) (SPEC §2); the last key has no mark yet.
      const d = t.get("decisions")!;
      const farMask = Int32Array.from(d, (_, i) => (i % T < T - 1 ? d[i + 1] : 0));
      using tq = Tensor.fromArray(gpu, q, [B, Hq, T, D]);
      using tk = Tensor.fromArray(gpu, t.get("k")!, [B, Hkv, T, D]);
      using tv = Tensor.fromArray(gpu, t.get("v")!, [B, Hkv, T, D]);
      using fm = Tensor.fromArray(gpu, farMask, [B, Hkv, T], "i32");
      using km = Tensor.fromArray(gpu, t.get("attn_mask")!, [B, T], "i32");
      const ref = attentionReference(q, t.get("k")!, t.get("v")!, { B, Hq, Hkv, T, S: T, D }, {
        window: W,
        farMask,
        keyMask: t.get("attn_mask")!,
      });
      // Expected [B, Hkv, rows, G, D] -> ours [B, Hq, T, D] rows [lo, lo + rows).
      const expect = (x: Float32Array, lo: number, rows: number, got: ArrayLike<number>) => {
        const a: number[] = [], e: number[] = [];
        for (let bh = 0; bh < B * Hkv; bh++) {
          for (let s = 0; s < rows; s++) {
            for (let g = 0; g < G; g++) {
              for (let j = 0; j < D; j++) {
                e.push(x[((bh * rows + s) * G + g) * D + j]);
                a.push(got[((bh * G + g) * T + lo + s) * D + j]);
              }
            }
          }
        }
        return [a, e];
      };
      const tol = { atol: meta.recommended_tolerance.prefill_out.atol, rtol: 0 };
      const outs: [string, ArrayLike<number>][] = [["reference", ref.out]];
      for (const kernel of KERNELS) {
        using out = attention(tq, tk, tv, { window: W, farMask: fm, keyMask: km, kernel });
        outs.push([kernel, await out.toArray()]);
      }
      for (const [who, got] of outs) {
        const [ap, ep] = expect(t.get("prefill_out") as Float32Array, 0, P, got);
        assertClose(ap, ep, tol, `${name} prefill_out (${who})`);
        const [ad, ed] = expect(t.get("decode_out") as Float32Array, P, N, got);
        assertClose(ad, ed, tol, `${name} decode_out (${who})`);
      }
    },
  });
}
