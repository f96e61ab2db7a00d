// attention(): the GQA head mapping (HF repeat_kv order) and the lse merge of partial softmaxes,
// against multi-head attention over expanded heads and the f64 reference over all keys.
import fc from "fast-check";
import assert from "node:assert/strict";
import { readTensors, Tensor } from "../../src/tensor/tensor.ts";
import {
  attention,
  type AttentionKernel,
  attentionReference,
  mergeAttentionReference,
} from "../../src/ops/attention.ts";
import {
  assertClose,
  fcParams,
  gpu,
  GPU_TEST,
  leftPadMask,
  randomArray,
  randomBits,
  TOL,
  type Tolerance,
} from "../_util.ts";

// lse is f32; |lse| stays below ~20 here (as in attention_test.ts).
const LSE_TOL: Tolerance = { atol: 5e-5, rtol: 1e-5 };

/** Expands KV-head tensors [B, Hkv, ...inner] to [B, Hkv * G, ...inner] like HF repeat_kv. */
function repeatKv(x: ArrayLike<number>, B: number, Hkv: number, G: number, inner: number) {
  const out = new Float32Array(B * Hkv * G * inner);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hkv * G; h++) {
      const src = (b * Hkv + Math.floor(h / G)) * inner;
      out.set(Array.from({ length: inner }, (_, j) => x[src + j]), (b * Hkv * G + h) * inner);
    }
  }
  return out;
}

/** Permutes the head axis of [B, H, inner]: out[:, j] = x[:, perm[j]]. */
function permuteHeads(x: ArrayLike<number>, B: number, perm: number[], inner: number) {
  const H = perm.length, out = new Float32Array(B * H * inner);
  for (let b = 0; b < B; b++) {
    for (let j = 0; j < H; j++) {
      for (let e = 0; e < inner; e++) {
        out[(b * H + j) * inner + e] = x[(b * H + perm[j]) * inner + e];
      }
    }
  }
  return out;
}

Deno.test({
  name: "attention() maps query head h to KV head floor(h / G) (HF repeat_kv order)",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 4 }),
        fc.integer({ min: 2, max: 3 }),
        fc.constantFrom<AttentionKernel>("naive", "flash"),
        fc.integer(),
        async (Hkv, G, kernel, seed) => {
          const B = 2, T = 9, S = 13, D = 8, Hq = Hkv * G, W = 2;
          const q = randomArray(B * Hq * T * D, seed);
          const k = randomArray(B * Hkv * S * D, seed + 1);
          const v = randomArray(B * Hkv * S * D, seed + 2);
          const fm = randomBits(B * Hkv * S, seed + 3);
          const fb = randomArray(B * Hkv * S, seed + 4, -3, 0);
          const run = async (
            q: Float32Array,
            k: Float32Array,
            v: Float32Array,
            fm: Int32Array,
            fb: Float32Array,
            H: number,
          ) => {
            using tq = Tensor.fromArray(gpu, q, [B, Hq, T, D]);
            using tk = Tensor.fromArray(gpu, k, [B, H, S, D]);
            using tv = Tensor.fromArray(gpu, v, [B, H, S, D]);
            using tm = Tensor.fromArray(gpu, fm, [B, H, S], "i32");
            using tb = Tensor.fromArray(gpu, fb, [B, H, S]);
            using out = attention(tq, tk, tv, { window: W, farMask: tm, farBias: tb, kernel });
            return await out.toArray();
          };
          const gqa = await run(q, k, v, fm, fb, Hkv);
          // (a) Same as multi-head attention over KV heads expanded by repeat_kv.
          const rk = (x: Float32Array, inner: number) => repeatKv(x, B, Hkv, G, inner);
          const mha = await run(
            q,
            rk(k, S * D),
            rk(v, S * D),
            Int32Array.from(rk(Float32Array.from(fm), S)),
            rk(fb, S),
            Hq,
          );
          assertClose(gqa, mha, TOL.f32, `${kernel} GQA vs repeat_kv Hkv=${Hkv} G=${G}`);
          // (b) Permuting KV heads (with their query groups) permutes the outputs the same way.
          const perm = Array.from({ length: Hkv }, (_, i) => (i + 1) % Hkv);
          const qperm = perm.flatMap((p) => Array.from({ length: G }, (_, g) => p * G + g));
          const pk = (x: ArrayLike<number>, inner: number) => permuteHeads(x, B, perm, inner);
          const permuted = await run(
            permuteHeads(q, B, qperm, T * D),
            pk(k, S * D),
            pk(v, S * D),
            Int32Array.from(pk(fm, S)),
            pk(fb, S),
            Hkv,
          );
          assertClose(permuted, permuteHeads(gqa, B, qperm, T * D), TOL.f32, `${kernel} permuted`);
          // The permutation is not a no-op (otherwise (b) would prove nothing).
          assert.ok(permuteHeads(gqa, B, qperm, T * D).some((x, i) => x !== gqa[i]));
        },
      ),
      fcParams(6),
    );
  },
});

Deno.test({
  name: "attention() lse merges partial softmaxes over split keys into the full result",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 16 }),
        fc.integer({ min: 1, max: 16 }),
        fc.integer({ min: 0, max: 4 }),
        fc.constantFrom<AttentionKernel>("naive", "flash"),
        fc.integer(),
        async (S1, S2, W, kernel, seed) => {
          // Keys [0, S1) and [S1, S): the second part's key j sits at S1 + j, so its queries are
          // shifted by -S1. Queries before S1 see nothing in part 2 (lse empty, weight 0).
          const B = 1, Hkv = 2, G = 2, D = 8, S = S1 + S2, T = Math.min(S, 12), Hq = Hkv * G;
          const qoff = S - T;
          const q = randomArray(B * Hq * T * D, seed);
          const k = randomArray(B * Hkv * S * D, seed + 1);
          const v = randomArray(B * Hkv * S * D, seed + 2);
          const fm = randomBits(B * Hkv * S, seed + 3);
          const keyMask = leftPadMask(S, [Math.min(3, S)]);
          const part = async (lo: number, hi: number) => {
            const n = hi - lo;
            const sl = (x: ArrayLike<number>, inner: number, rows: number) => {
              const out = new Float32Array(rows * n * inner);
              for (let r = 0; r < rows; r++) {
                for (let j = 0; j < n * inner; j++) {
                  out[r * n * inner + j] = x[(r * S + lo) * inner + j];
                }
              }
              return out;
            };
            using tq = Tensor.fromArray(gpu, q, [B, Hq, T, D]);
            using tk = Tensor.fromArray(gpu, sl(k, D, B * Hkv), [B, Hkv, n, D]);
            using tv = Tensor.fromArray(gpu, sl(v, D, B * Hkv), [B, Hkv, n, D]);
            using tm = Tensor.fromArray(gpu, sl(fm, 1, B * Hkv), [B, Hkv, n], "i32");
            using km = Tensor.fromArray(gpu, sl(keyMask, 1, B), [B, n], "i32");
            const r = attention(tq, tk, tv, {
              queryOffset: qoff - lo,
              window: W,
              farMask: tm,
              keyMask: km,
              returnLse: true,
              kernel,
            });
            const [out, lse] = await readTensors([r.out, r.lse]);
            r.out.dispose(), r.lse.dispose();
            return { out, lse };
          };
          const merged = mergeAttentionReference([await part(0, S1), await part(S1, S)], D);
          const full = attentionReference(q, k, v, { B, Hq, Hkv, T, S, D }, {
            window: W,
            farMask: fm,
            keyMask,
          });
          assertClose(merged.out, full.out, TOL.f32, `merged out S1=${S1} S2=${S2}`);
          assertClose(merged.lse, full.lse, LSE_TOL, `merged lse S1=${S1} S2=${S2}`);
        },
      ),
      fcParams(8),
    );
  },
});
