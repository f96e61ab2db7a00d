/**
 * The OpenGL CPU route (`AdapterSummary.cpuGl`, forced here with `Gpu.create({ cpuGl: true })`
 * so it runs on lavapipe in CI): sampling takes the readable `naive` kernel, products of at most
 * `GL_NAIVE_MAX_MACS` multiply-adds the `naive` matmul, and the demo's models give the same
 * tokens through it as through the default kernels; none of the kernels that llvmpipe GL
 * compiles for seconds to minutes (sampler `fast`/`split`, matmul `tiled`, flash attention) is
 * dispatched.
 */
import assert from "node:assert/strict";
import { Gpu } from "../../src/gpu/device.ts";
import { generate } from "../../src/generate.ts";
import { loadModel } from "../../src/model/model.ts";
import { GL_NAIVE_MAX_MACS } from "../../src/ops/matmul_launch.ts";
import { linear, linearReference } from "../../src/ops/matmul.ts";
import { sample, sampleReference, sampleUniform } from "../../src/ops/sample.ts";
import { Tensor } from "../../src/tensor/tensor.ts";
import { generateTask, type Task } from "../../src/eval/tasks.ts";
import { assertClose, gpu, GPU_TEST, TOL } from "../_util.ts";

/** A device on the same adapter with the OpenGL CPU route forced, and the labels it dispatches. */
async function glRoute(): Promise<{ gl: Gpu; labels: Set<string> }> {
  const gl = await Gpu.create({ cpuGl: true });
  const labels = new Set<string>();
  const dispatch = gl.dispatch.bind(gl);
  gl.dispatch = (...a: Parameters<typeof dispatch>) => {
    labels.add(a[0].label);
    dispatch(...a);
  };
  return { gl, labels };
}

/** Kernels with workgroup barriers that compiled for seconds or minutes on llvmpipe GL. */
const SLOW_ON_GL =
  /^(sample|sample_split|matmul:tiled|matmul_big|paged_prefill|paged_prefill_wide|paged_decode)\b/;

function seeded(n: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return Math.fround((s / 2 ** 32) * 8 - 4);
  });
}

Deno.test({
  ...GPU_TEST,
  name: "the forced OpenGL route samples with the naive kernel and matches the reference",
  fn: async () => {
    const { gl, labels } = await glRoute();
    assert.equal(gl.adapter.cpuGl, true);
    assert.equal(gl.adapter.description, gpu.adapter.description);
    const B = 3;
    for (const V of [5, 128, 20000]) {
      const rows = seeded(B * V, V);
      using logits = Tensor.fromArray(gl, rows, [B, V]);
      for (
        const opts of [{}, { temperature: 0.8, seed: 7 }, {
          temperature: 1,
          topK: 5,
          topP: 0.9,
          seed: 3,
        }]
      ) {
        using ids = sample(logits, { ...opts, step: 2 });
        const got = Array.from(await ids.toArray());
        const want = [0, 1, 2].map((b) =>
          sampleReference(rows.slice(b * V, (b + 1) * V), opts, sampleUniform(opts.seed ?? 0, 2, b))
        );
        assert.deepEqual(got, want, `V ${V} ${JSON.stringify(opts)}`);
      }
    }
    const used = [...labels];
    assert.ok(used.every((l) => !SLOW_ON_GL.test(l)), used.join("; "));
    assert.ok(used.some((l) => l.startsWith("sample_naive:")), used.join("; "));
  },
});

Deno.test({
  ...GPU_TEST,
  name: "the forced OpenGL route runs small products as naive and large ones as tiled",
  fn: async () => {
    const { gl, labels } = await glRoute();
    const [M, K, N] = [70, 48, 33]; // rows past GEMV's 8, far below GL_NAIVE_MAX_MACS
    const xs = seeded(M * K, 1), ws = seeded(N * K, 2);
    using x = Tensor.fromArray(gl, xs, [M, K]);
    using w = Tensor.fromArray(gl, ws, [N, K]);
    using y = linear(x, w);
    assertClose(
      await y.toArray(),
      linearReference(xs, [M, K], ws, [N, K]),
      TOL.f32,
      "naive linear on the OpenGL route",
    );
    assert.deepEqual([...labels].filter((l) => l.startsWith("matmul:")), [
      'matmul:naive {"T":"f32"} {"TRANS_B":1}',
    ]);
    labels.clear();
    const big = 2 ** 12; // M·N·K = 2^12 · 2^6 · 2^7 = 2^25 > GL_NAIVE_MAX_MACS
    assert.ok(big * 64 * 128 > GL_NAIVE_MAX_MACS);
    using xb = Tensor.zeros(gl, [big, 128]);
    using wb = Tensor.zeros(gl, [64, 128]);
    using _yb = linear(xb, wb);
    await gl.sync();
    assert.deepEqual([...labels], ['matmul:tiled {"T":"f32"} {"TRANS_B":1}']);
  },
});

Deno.test({
  ...GPU_TEST,
  name: "the demo's models answer the same through the forced OpenGL route as by default",
  fn: async () => {
    const { gl, labels } = await glRoute();
    const dir = new URL("../../testdata/students-all-weights/w8-step1000", import.meta.url)
      .pathname;
    const task: Task = { kind: "kv", length: 120, pairs: 1, depth: [0, 0.5] };
    const prompts = generateTask(task, { count: 2, seed: 5 }).map((s) => s.prompt);
    const tokens: number[][][] = [];
    for (const g of [gpu, gl]) {
      const model = await loadModel(g, dir, { dtype: "f32" });
      for (const policy of ["dense", "dms"] as const) {
        const gen = generate(model, prompts, { maxTokens: 3, cache: policy });
        let r = await gen.next();
        while (!r.done) r = await gen.next();
        tokens.push(r.value.tokens);
      }
    }
    assert.deepEqual(tokens.slice(2), tokens.slice(0, 2));
    const used = [...labels];
    assert.ok(used.every((l) => !SLOW_ON_GL.test(l)), used.join("; "));
    assert.ok(used.some((l) => l.startsWith("paged_simple:")), used.join("; "));
  },
});
