/**
 * The attention-only golden cases (testdata/conformance/C1, C2; produced by NVIDIA's reference)
 * through the GPU DMS cache: prefill_out and decode_out (atol 1e-5, case.json), cache_len
 * exact at every observable row, and the retained positions of every page at every observable
 * row exactly (cache_retained_mask).
 */

import assert from "node:assert/strict";
import { createDmsCache } from "../../src/dms/dms_cache.ts";
import { openSafetensors } from "../../src/io/safetensors.ts";
import { readTensors, Tensor } from "../../src/tensor/tensor.ts";
import { assertClose, gpu, GPU_TEST } from "../_util.ts";

const ROOT = new URL("../../testdata/conformance/", import.meta.url);

interface CaseJson {
  batch: number;
  heads_kv: number;
  gqa_factor: number;
  head_dim: number;
  attn_scaling: number;
  cache_window: number;
  block_size: number;
  prefill_len: number;
  prefill_chunks: [number, number][];
  num_decode_steps: number;
  total_len: number;
  recommended_tolerance: { prefill_out: { atol: number }; decode_out: { atol: number } };
}

async function runCase(name: string): Promise<void> {
  const dir = new URL(`${name}/`, ROOT);
  const cfg = JSON.parse(await Deno.readTextFile(new URL("case.json", dir))) as CaseJson;
  using file = await openSafetensors(new URL("case.safetensors", dir).pathname);
  const get = async (n: string) => (await file.read(n)).data;
  const [q, k, v, dec, mask, prefOut, decOut, cacheLen, retained] = await Promise.all(
    [
      "q",
      "k",
      "v",
      "decisions",
      "attn_mask",
      "prefill_out",
      "decode_out",
      "cache_len",
      "cache_retained_mask",
    ]
      .map(get),
  );
  const B = cfg.batch, Hkv = cfg.heads_kv, G = cfg.gqa_factor, D = cfg.head_dim, T = cfg.total_len;
  const S = cfg.prefill_len, N = cfg.num_decode_steps, Hq = Hkv * G;
  const W = cfg.cache_window - 1; // the case's cache window is Wc = W + 1
  using cache = createDmsCache(gpu, {
    layers: 1,
    batch: B,
    kvHeads: Hkv,
    headDim: D,
    window: W,
    blockSize: cfg.block_size,
    preallocateTokens: cfg.block_size, // start small: the pool grows during the case
  });
  // q is [B*Hkv, T, G, D] (flash layout): query head h*G+i of row b*Hkv+h.
  const qAt = (b: number, hq: number, t: number, c: number) =>
    q[(((b * Hkv + Math.floor(hq / G)) * T + t) * G + (hq % G)) * D + c];
  const steps: [number, number][] = [...cfg.prefill_chunks];
  for (let t = S; t < T; t++) steps.push([t, t + 1]);
  const outs: Tensor[] = [];
  for (const [t0, t1] of steps) {
    const n = t1 - t0;
    const qs: number[] = [],
      ks: number[] = [],
      vs: number[] = [],
      ds: number[] = [],
      ms: number[] = [];
    for (let b = 0; b < B; b++) {
      for (let hq = 0; hq < Hq; hq++) {
        for (let t = t0; t < t1; t++) for (let c = 0; c < D; c++) qs.push(qAt(b, hq, t, c));
      }
      for (let h = 0; h < Hkv; h++) {
        for (let t = t0; t < t1; t++) {
          ds.push(dec[(b * Hkv + h) * T + t]);
          for (let c = 0; c < D; c++) {
            ks.push(k[((b * Hkv + h) * T + t) * D + c]);
            vs.push(v[((b * Hkv + h) * T + t) * D + c]);
          }
        }
      }
      for (let t = t0; t < t1; t++) ms.push(mask[b * T + t]);
    }
    using tq = Tensor.fromArray(gpu, qs, [B, Hq, n, D]);
    using tk = Tensor.fromArray(gpu, ks, [B, Hkv, n, D]);
    using tv = Tensor.fromArray(gpu, vs, [B, Hkv, n, D]);
    using td = Tensor.fromArray(gpu, ds, [B, Hkv, n], "i32");
    outs.push(cache.attend(0, tq, tk, tv, td, { keyMask: ms, scale: cfg.attn_scaling }));
    // Observable row t1 - 1: lengths and retained positions of every page.
    const t = t1 - 1;
    const pages = await cache.inspect(0);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hkv; h++) {
        const p = b * Hkv + h;
        const wantLen = cacheLen[(t * B + b) * Hkv + h];
        if (wantLen >= 0) {
          assert.equal(pages[p].positions.length, wantLen, `${name} cache_len[${t}, ${b}, ${h}]`);
        }
        const row = ((t * B + b) * Hkv + h) * T;
        if (retained[row] < 0) continue;
        const want: number[] = [];
        for (let j = 0; j < T; j++) if (retained[row + j] === 1) want.push(j);
        assert.deepEqual(
          [...pages[p].positions].sort((x, y) => x - y),
          want,
          `${name} retained positions at ${t}, page ${p}`,
        );
      }
    }
  }
  const arrays = await readTensors(outs);
  outs.forEach((o) => o.dispose());
  // Ours: [B, Hq, n, D] per step. Expected: prefill_out [B, Hkv, S, G, D], decode_out [B, Hkv, N, G, D].
  const got = (t: number, b: number, hq: number, c: number) => {
    const si = steps.findIndex(([a, e]) => t >= a && t < e);
    const [a, e] = steps[si];
    return arrays[si][((b * Hq + hq) * (e - a) + (t - a)) * D + c];
  };
  const gotPre: number[] = [], gotDec: number[] = [];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hkv; h++) {
      for (let t = 0; t < T; t++) {
        for (let i = 0; i < G; i++) {
          for (let c = 0; c < D; c++) (t < S ? gotPre : gotDec).push(got(t, b, h * G + i, c));
        }
      }
    }
  }
  assert.equal(gotPre.length, prefOut.length);
  assert.equal(gotDec.length, N > 0 ? decOut.length : 0);
  assertClose(
    gotPre,
    prefOut,
    { atol: cfg.recommended_tolerance.prefill_out.atol },
    `${name} prefill_out`,
  );
  assertClose(
    gotDec,
    decOut,
    { atol: cfg.recommended_tolerance.decode_out.atol },
    `${name} decode_out`,
  );
}

Deno.test({
  name:
    "DmsCache reproduces golden case C1_attn_single_chunk (outputs, cache_len, retained positions)",
  ...GPU_TEST,
  fn: () => runCase("C1_attn_single_chunk"),
});

Deno.test({
  name: "DmsCache reproduces golden case C2_attn_chunked_padded_b2 (chunked, left-padded, B = 2)",
  ...GPU_TEST,
  fn: () => runCase("C2_attn_chunked_padded_b2"),
});
