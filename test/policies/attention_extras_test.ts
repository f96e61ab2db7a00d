/**
 * The decode kernel's policy extras (src/cache/paged_attention.ts): the attention probabilities
 * of a recorded decode step against a CPU softmax (`decodeProbsReference`), and the chunk
 * selection against attention restricted to the selected chunks in f64, for both decode
 * kernels (split and tiled), one and many splits, GQA and both dtypes.
 */

import fc from "fast-check";
import assert from "node:assert/strict";
import { decodeProbsReference, pagedAttention } from "../../src/cache/paged_attention.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray, TOL } from "../_util.ts";
import { feed, makeProblem } from "../cache/harness.ts";

const arb = fc.record({
  kernel: fc.constantFrom("split" as const, "tiled" as const),
  dtype: fc.constantFrom(...(gpu.hasF16 ? ["f32", "f16"] as const : ["f32"] as const)),
  G: fc.integer({ min: 1, max: 4 }),
  D: fc.constantFrom(3, 8, 16),
  T: fc.integer({ min: 1, max: 40 }),
  B: fc.integer({ min: 1, max: 2 }),
  extra: fc.integer({ min: 0, max: 5 }),
  chunk: fc.integer({ min: 1, max: 9 }),
  pSel: fc.constantFrom(0, 0.5, 1),
  split: fc.constantFrom(undefined, 32),
  accumulate: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1 << 30 }),
});

Deno.test({
  name:
    "decode attention writes per-entry probabilities equal to a CPU softmax and attends only to selected chunks",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(arb, async (c) => {
        const Hkv = 2, { B, G, D, T } = c;
        const f16 = c.dtype === "f16";
        const pr = makeProblem({ B, Hkv, G, D, T, seed: c.seed, pEvict: 0, f16 });
        using cache = createDenseCache(gpu, {
          layers: 1,
          batch: B,
          kvHeads: Hkv,
          headDim: D,
          blockSize: 4,
          dtype: c.dtype,
          partitionKeys: c.split,
          preallocateTokens: 4,
        });
        await feed(cache, [pr], [T]);
        const pages = B * Hkv, stride = T + c.extra, cst = Math.ceil(T / c.chunk);
        let qa = randomArray(pages * G * D, c.seed + 7, -2, 2);
        if (f16) qa = roundToF16(qa);
        const sel = Uint32Array.from(
          randomArray(pages * cst, c.seed + 8, 0, 1),
          (u) => (u < c.pSel ? 1 : 0),
        );
        const before = randomArray(pages * stride, c.seed + 9, 0, 1);
        const probs = gpu.alloc(pages * stride * 4, "test probs");
        const selBuf = gpu.alloc(sel.byteLength, "test select");
        gpu.write(probs, before);
        gpu.write(selBuf, sel);
        const scale = 1 / Math.sqrt(D);
        using q = Tensor.fromArray(gpu, qa, [B, Hkv * G, 1, D], c.dtype);
        using out = pagedAttention(cache.storage, 0, q, {
          t0: T,
          window: 0,
          scale,
          decodeKernel: c.kernel,
          probs: { buffer: probs, offset: 0, stride, accumulate: c.accumulate },
          chunks: { select: selBuf, size: c.chunk, stride: cst },
        });
        const got = new Float32Array(await gpu.read(probs, pages * stride * 4));
        const outA = await out.toArray();
        gpu.release(probs);
        gpu.release(selBuf);
        // Dense prefill without padding: slot s of page p holds position s.
        const k = f16 ? roundToF16(pr.k) : pr.k, v = f16 ? roundToF16(pr.v) : pr.v;
        const wantP = Float64Array.from(before);
        const wantO = new Float64Array(pages * G * D);
        for (let p = 0; p < pages; p++) {
          const vis = Array.from({ length: T }, (_, s) => sel[p * cst + Math.floor(s / c.chunk)]);
          const keys = k.subarray(p * T * D, (p + 1) * T * D);
          const qp = qa.subarray(p * G * D, (p + 1) * G * D);
          const w = decodeProbsReference(qp, keys, vis, G, D, scale);
          for (let s = 0; s < T; s++) {
            wantP[p * stride + s] = (c.accumulate ? before[p * stride + s] : 0) + w[s];
          }
          // Output per head: softmax over the selected keys, from the same reference (G = 1).
          for (let g = 0; g < G; g++) {
            const wg = decodeProbsReference(
              qp.subarray(g * D, (g + 1) * D),
              keys,
              vis,
              1,
              D,
              scale,
            );
            for (let s = 0; s < T; s++) {
              for (let d = 0; d < D; d++) {
                wantO[(p * G + g) * D + d] += wg[s] * v[(p * T + s) * D + d];
              }
            }
          }
        }
        const label = JSON.stringify(c);
        assertClose(got, wantP, TOL[c.dtype], `probs ${label}`);
        assertClose(outA, wantO, TOL[c.dtype], `out ${label}`);
        if (c.pSel === 0) assert.ok(outA.every((x) => x === 0), `nothing selected ${label}`);
      }),
      fcParams(12),
    );
  },
});
