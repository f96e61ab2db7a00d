/**
 * A plain Hugging Face checkpoint stays plain: tiny Qwen3/Llama checkpoints written by
 * transformers' `save_pretrained` (testdata/interop/, made by `python3 tools/interop.py`) load
 * with `loadModel` and reproduce transformers' own float32 logits — teacher mode, and prefill +
 * token-by-token decode through the dense cache — within 2e-5 × max|logit|, with the same argmax
 * at every position. The float64 CPU reference model is held to the same bound.
 *
 * The oracle is transformers itself (CPU, float32, eager attention), not this project.
 */

import assert from "node:assert/strict";
import { createCacheFor, generate } from "../../src/generate.ts";
import { loadConfig } from "../../src/model/config.ts";
import { loadModel } from "../../src/model/model.ts";
import { loadReferenceModel, teacherForward } from "../../src/model/reference.ts";
import { openCheckpoint, openSafetensors } from "../../src/io/safetensors.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { gpu, GPU_TEST } from "../_util.ts";

const ROOT = new URL("../../testdata/interop/", import.meta.url);
const CASES = [...Deno.readDirSync(ROOT)].filter((e) => e.isDirectory).map((e) => e.name).sort();
/** Relative tolerance of the issue: 2e-5 × max|logit|. */
const REL = 2e-5;

interface Expected {
  dir: string;
  tokens: number[];
  promptLength: number;
  /** `[T, V]` transformers' float32 logits. */
  logits: Float32Array;
  vocab: number;
}

async function expected(name: string): Promise<Expected> {
  const dir = new URL(`${name}/`, ROOT).pathname;
  using e = await openSafetensors(`${dir}expected.safetensors`);
  const meta = JSON.parse(await Deno.readTextFile(`${dir}meta.json`));
  const tokens = Array.from((await e.read("tokens")).data as Int32Array);
  const logits = (await e.read("logits")).data as Float32Array;
  return {
    dir,
    tokens,
    promptLength: meta.prompt_length,
    logits,
    vocab: logits.length / tokens.length,
  };
}

function argmax(a: ArrayLike<number>, from: number, n: number): number {
  let best = from;
  for (let i = from + 1; i < from + n; i++) if (a[i] > a[best]) best = i;
  return best - from;
}

/**
 * Asserts rows `[first, first + rows)` of `want` (`[T, V]`) against `got` (`[rows, V]`):
 * max error within REL × max|want| and the same argmax in every row.
 */
function assertLogits(
  what: string,
  got: ArrayLike<number>,
  e: Expected,
  first = 0,
  rows = e.tokens.length,
): void {
  const V = e.vocab;
  let max = 0;
  for (const x of e.logits) max = Math.max(max, Math.abs(x));
  let worst = 0, at = 0;
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < V; j++) {
      const d = Math.abs(got[r * V + j] - e.logits[(first + r) * V + j]);
      if (!(d <= worst)) [worst, at] = [d, r * V + j];
    }
    const a = argmax(got, r * V, V), b = argmax(e.logits, (first + r) * V, V);
    assert.equal(a, b, `${what}: argmax ${a} != transformers' ${b} at position ${first + r}`);
  }
  assert.ok(
    worst <= REL * max,
    `${what}: max |logit error| ${worst.toExponential(3)} at position ${
      first + Math.floor(at / V)
    }, token ${at % V} exceeds ${REL} × ${max.toFixed(3)}`,
  );
}

Deno.test("the interop folder holds every checkpoint kind tools/interop.py writes", async () => {
  assert.ok(CASES.length >= 6, `expected at least 6 interop cases, found ${CASES.length}`);
  const kinds = new Set<string>();
  for (const name of CASES) {
    const dir = new URL(`${name}/`, ROOT).pathname;
    const meta = JSON.parse(await Deno.readTextFile(`${dir}meta.json`));
    const cfg = await loadConfig(dir);
    assert.equal(cfg.isDms, false, `${name}: a plain checkpoint must not parse as DMS`);
    kinds.add(meta.architecture).add(meta.stored_dtype).add(`rope:${meta.rope}`);
    kinds.add(`spelling:${meta.rope_spelling}`).add(meta.tied ? "tied" : "untied");
    kinds.add(meta.weight_files.length > 1 ? "sharded" : "single");
  }
  for (
    const k of [
      "qwen3",
      "llama",
      "bfloat16",
      "float16",
      "float32",
      "rope:default",
      "rope:linear",
      "rope:llama3",
      "spelling:4.x",
      "spelling:5.x",
      "tied",
      "untied",
      "sharded",
      "single",
    ]
  ) assert.ok(kinds.has(k), `no interop case covers ${k}`);
});

for (const name of CASES) {
  Deno.test(`the float64 CPU reference reproduces transformers' logits for ${name}`, async () => {
    const e = await expected(name);
    const cfg = await loadConfig(e.dir);
    using ckpt = await openCheckpoint(e.dir);
    const weights = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const n of ckpt.tensors.keys()) {
      const t = await ckpt.read(n);
      weights.set(n, { shape: t.shape, data: t.data as Float32Array });
    }
    const ref = loadReferenceModel(cfg, weights);
    assertLogits(`${name} CPU reference`, teacherForward(ref, [e.tokens]).logits, e);
  });

  Deno.test({
    name: `loadModel reproduces transformers' logits for ${name}: teacher, prefill + decode`,
    ...GPU_TEST,
    async fn() {
      const e = await expected(name);
      const g = gpu;
      const model = await loadModel(g, e.dir, { dtype: "f32" });
      const T = e.tokens.length, P = e.promptLength, V = e.vocab;
      const positions = (from: number, n: number) =>
        Tensor.fromArray(g, Int32Array.from({ length: n }, (_, i) => from + i), [1, n], "i32");

      // teacher mode: every position in one forward
      {
        using ids = Tensor.fromArray(g, Int32Array.from(e.tokens), [1, T], "i32");
        using pos = positions(0, T);
        using logits = model.forward(ids, { mode: "teacher", positions: pos })!;
        assertLogits(`${name} teacher`, await logits.toArray(), e);
      }

      // the default cache of a plain model is dense, and so is a DMS cache it fills: it never evicts
      for (const policy of ["dense", "dms"] as const) {
        using cache = createCacheFor(model, 1, policy);
        await cache.reserve(T);
        using ids = Tensor.fromArray(g, Int32Array.from(e.tokens.slice(0, P)), [1, P], "i32");
        using pos = positions(0, P);
        using pre = model.forward(ids, { mode: "inference", positions: pos, cache })!;
        assertLogits(`${name} prefill (${policy} cache)`, await pre.toArray(), e, 0, P);
        const steps: Float32Array[] = [];
        for (let t = P; t < T; t++) {
          using one = Tensor.fromArray(g, Int32Array.of(e.tokens[t]), [1, 1], "i32");
          using p = positions(t, 1);
          using l = model.forward(one, { mode: "inference", positions: p, cache, logits: "last" })!;
          steps.push(await l.toArray() as Float32Array);
        }
        // step t's input is token t, so its logits are transformers' row t
        const got = new Float32Array((T - P) * V);
        steps.forEach((s, i) => got.set(s, i * V));
        assertLogits(`${name} decode (${policy} cache)`, got, e, P, T - P);
        const s = await cache.stats();
        assert.equal(s.liveTokens, T * model.config.numLayers * model.config.numKvHeads);
        assert.equal(s.compressionRatio, 1);
      }

      // greedy generation through the default (dense) cache continues as transformers did
      const run = generate(model, [e.tokens.slice(0, P)], { maxTokens: T - P, readbackEvery: 8 });
      let r = await run.next();
      while (!r.done) r = await run.next();
      assert.deepEqual(r.value.tokens[0], e.tokens.slice(P), `${name}: greedy tokens differ`);
      model.dispose();
    },
  });
}
