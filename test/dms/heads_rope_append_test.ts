/**
 * headsNormRopeQKAppend (src/dms/heads_rope_append.ts): a decode step's q/k preparation with the
 * cache's append fused in, against the unfused path it replaces (headsNormRopeQK, then the cache's
 * own append inside `attend`) on two caches filled alike, over random shapes, norms, the neuron,
 * dtypes and both caches (dense: slot = length; DMS: the slots `decode_slots` chose, the decision
 * and the mark of t − 1 in the kernel). Oracles: q and the attention output bit for bit equal to
 * the unfused path's (the attention reads the stored K and V), the cache entries (positions and
 * marks) equal, and q within tolerance of the CPU twin `headsNormRopeQKReference`.
 */
import fc from "fast-check";
import assert from "node:assert/strict";
import { Tensor } from "../../src/tensor/tensor.ts";
import { roundToF16 } from "../../src/tensor/dtype.ts";
import { ropeInvFreq } from "../../src/ops/rope.ts";
import { headsNormRopeQK, headsNormRopeQKReference } from "../../src/dms/heads_rope_qk.ts";
import { headsNormRopeQKAppend } from "../../src/dms/heads_rope_append.ts";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { createDenseCache } from "../../src/policies/dense.ts";
import type { PagedKvCache } from "../../src/cache/paged_kv_cache.ts";
import { assertClose, fcParams, FLOAT_DTYPES, gpu, GPU_TEST, randomArray, TOL } from "../_util.ts";

interface Case {
  dtype: "f32" | "f16";
  cache: "dense" | "dms";
  B: number;
  Hkv: number;
  G: number;
  D: number;
  P: number;
  norm: boolean;
  neuron: boolean;
  seed: number;
}

function data(n: number, seed: number, dtype: "f32" | "f16", lo = -1, hi = 1): Float32Array {
  const d = randomArray(n, seed, lo, hi);
  return dtype === "f16" ? roundToF16(d) : d;
}

function makeCache(c: Case): PagedKvCache {
  const sizes = { layers: 1, batch: c.B, kvHeads: c.Hkv, headDim: c.D, dtype: c.dtype };
  return c.cache === "dms"
    ? createDmsCache(gpu, { ...sizes, window: 3, blockSize: 2 })
    : createDenseCache(gpu, { ...sizes, blockSize: 4 });
}

async function check(c: Case): Promise<void> {
  const { dtype, B, Hkv, G, D, P } = c, Hq = Hkv * G;
  const label = JSON.stringify(c);
  const dms = c.cache === "dms";
  // two caches with the same prompt (and, for DMS, the same decisions)
  const caches = [makeCache(c), makeCache(c)];
  try {
    {
      using pk = Tensor.fromArray(gpu, data(B * Hkv * P * D, c.seed, dtype), [B, Hkv, P, D], dtype);
      using pv = Tensor.fromArray(
        gpu,
        data(B * Hkv * P * D, c.seed + 1, dtype),
        [B, Hkv, P, D],
        dtype,
      );
      using pq = Tensor.fromArray(
        gpu,
        data(B * Hq * P * D, c.seed + 2, dtype),
        [B, Hq, P, D],
        dtype,
      );
      const d = Array.from(randomArray(B * Hkv * P, c.seed + 3), (x) => (x > 0 ? 1 : 0));
      using pd = Tensor.fromArray(gpu, d, [B, Hkv, P], "i32");
      for (const cache of caches) cache.attend(0, pq, pk, pv, dms ? pd : undefined).dispose();
    }
    const qa = data(B * Hq * D, c.seed + 4, dtype), ka = data(B * Hkv * D, c.seed + 5, dtype);
    const va = data(B * Hkv * D, c.seed + 6, dtype);
    const wq = data(D, c.seed + 7, dtype, 0.5, 1.5), wk = data(D, c.seed + 8, dtype, 0.5, 1.5);
    using q = Tensor.fromArray(gpu, qa, [B, 1, Hq, D], dtype);
    using k = Tensor.fromArray(gpu, ka, [B, 1, Hkv, D], dtype);
    using v = Tensor.fromArray(gpu, va, [B, 1, Hkv, D], dtype);
    using tq = Tensor.fromArray(gpu, wq, [D], dtype), tk = Tensor.fromArray(gpu, wk, [D], dtype);
    using pos = Tensor.fromArray(gpu, Array(B).fill(P), [B, 1], "i32");
    using inv = Tensor.fromArray(gpu, ropeInvFreq(D, 1e4), [D / 2]);
    const opts = {
      qNorm: c.norm ? { weight: tq, eps: 1e-6 } : undefined,
      kNorm: c.norm ? { weight: tk, eps: 1e-6 } : undefined,
      neuron: c.neuron,
      decide: dms ? { alphaScale: 3, alphaOffset: 0 } : undefined,
    };
    // fused: the kernel stores the entry
    const [fused, plain] = caches;
    const target = fused.decodeAppendTarget(0, dtype, dms);
    assert.ok(target, `${label}: a target`);
    assert.equal(target.slots !== undefined, dms, `${label}: slots for DMS only`);
    using qf = headsNormRopeQKAppend(q, k, v, pos, inv, opts, target);
    using kv = k.reshape([B, Hkv, 1, D]), vv = v.reshape([B, Hkv, 1, D]);
    using of = fused.attend(0, qf, kv, vv);
    // unfused: q/k kernel, then attend's own append
    const r = headsNormRopeQK(q, k, pos, inv, opts);
    using qp = r.q, kp = r.k;
    using vp = v.reshape([B, Hkv, 1, D]);
    using op = plain.attend(0, qp, kp, vp, r.decisions);
    r.raw?.dispose(), r.alpha?.dispose(), r.decisions?.dispose();
    const got = await qf.toArray();
    assert.deepEqual(got, await qp.toArray(), `${label}: q`);
    assert.deepEqual(
      await of.toArray(),
      await op.toArray(),
      `${label}: attention over the stored K/V`,
    );
    assert.deepEqual(
      await fused.storage.snapshot(0),
      await plain.storage.snapshot(0),
      `${label}: entries`,
    );
    const ref = headsNormRopeQKReference(
      qa,
      [B, 1, Hq, D],
      ka,
      [B, 1, Hkv, D],
      Array(B).fill(P),
      ropeInvFreq(D, 1e4),
      {
        qNorm: c.norm ? { weight: wq, eps: 1e-6 } : undefined,
        kNorm: c.norm ? { weight: wk, eps: 1e-6 } : undefined,
        neuron: c.neuron,
        dtype,
      },
    );
    assertClose(got, ref.q, TOL[dtype], `${label}: q vs CPU twin`);
  } finally {
    for (const cache of caches) cache.dispose();
  }
}

Deno.test({
  name: "headsNormRopeQKAppend stores what the unfused path stores and returns its q bit for bit " +
    "(dense and DMS caches, norms, neuron, f32/f16), q within tolerance of the CPU twin",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          dtype: fc.constantFrom(...FLOAT_DTYPES),
          cache: fc.constantFrom<"dense" | "dms">("dense", "dms"),
          B: fc.integer({ min: 1, max: 2 }),
          Hkv: fc.integer({ min: 1, max: 3 }),
          G: fc.integer({ min: 1, max: 3 }),
          D: fc.constantFrom(8, 16, 32),
          P: fc.integer({ min: 1, max: 12 }),
          norm: fc.boolean(),
          neuron: fc.boolean(),
          seed: fc.integer({ min: 0, max: 1 << 30 }),
        }).map((c) => (c.cache === "dms" ? { ...c, neuron: true } : c)),
        check,
      ),
      fcParams(25),
    );
  },
});

Deno.test({
  name: "headsNormRopeQKAppend names what it cannot take: T > 1, v's shape, decide for dense",
  ...GPU_TEST,
  fn: () => {
    using cache = createDenseCache(gpu, { layers: 1, batch: 1, kvHeads: 1, headDim: 8 });
    const target = cache.decodeAppendTarget(0, "f32", false)!;
    using q = Tensor.zeros(gpu, [1, 1, 2, 8]), k = Tensor.zeros(gpu, [1, 1, 1, 8]);
    using q2 = Tensor.zeros(gpu, [1, 2, 2, 8]), k2 = Tensor.zeros(gpu, [1, 2, 1, 8]);
    using v4 = Tensor.zeros(gpu, [1, 1, 1, 4]);
    using pos = Tensor.fromArray(gpu, [0], [1, 1], "i32");
    using pos2 = Tensor.fromArray(gpu, [0, 1], [1, 2], "i32");
    using inv = Tensor.fromArray(gpu, ropeInvFreq(8, 1e4), [4]);
    assert.throws(() => headsNormRopeQKAppend(q2, k2, k2, pos2, inv, {}, target), /T = 1/);
    assert.throws(
      () => headsNormRopeQKAppend(q, k, v4, pos, inv, {}, target),
      /v: expected \[1, 1, Hkv, 8\]/,
    );
    assert.throws(
      () =>
        headsNormRopeQKAppend(q, k, k, pos, inv, {
          neuron: true,
          decide: { alphaScale: 1, alphaOffset: 0 },
        }, target),
      /no decide \(a dense target\)/,
    );
  },
});
