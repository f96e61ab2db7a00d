import assert from "node:assert/strict";
import fc from "fast-check";
import { Tensor } from "../../src/tensor/tensor.ts";
import { AdamW, clipGradients, globalGradNorm } from "../../src/train/adamw.ts";
import {
  adamwReferenceStep,
  clipGradNormReference,
  newAdamwState,
} from "../../src/train/reference_adamw.ts";
import { assertClose, fcParams, gpu, GPU_TEST, randomArray } from "../_util.ts";

const shapesArb = fc.array(
  fc.array(fc.integer({ min: 1, max: 70 }), { minLength: 1, maxLength: 2 }),
  { minLength: 1, maxLength: 4 },
);
const numel = (s: number[]) => s.reduce((a, b) => a * b, 1);

Deno.test({
  name:
    "globalGradNorm() and clipGradients() match clip_grad_norm_'s f64 reference, in windows too",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        shapesArb,
        fc.integer(),
        fc.constantFrom(0.1, 1, 1000),
        fc.boolean(),
        async (shapes, seed, maxNorm, small) => {
          const data = shapes.map((s, i) => randomArray(numel(s), seed + i, -2, 2));
          const ts = data.map((d, i) => Tensor.fromArray(gpu, d, shapes[i]));
          // small: 16 KiB windows, so a tensor over 4096 elements spans several.
          const opts = small ? { maxBindingBytes: 16384 } : {};
          using n0 = globalGradNorm(ts, opts);
          using norm = clipGradients(ts, maxNorm, opts);
          const ref = clipGradNormReference(
            new Map(data.map((d, i) => [`${i}`, Float64Array.from(d)])),
            maxNorm,
          );
          const tol = { atol: 1e-6, rtol: 1e-5 };
          assertClose(await n0.toArray(), [ref.totalNorm], tol, "norm");
          assertClose(await norm.toArray(), [ref.totalNorm], tol, "norm before clipping");
          for (let i = 0; i < ts.length; i++) {
            assertClose(await ts[i].toArray(), ref.grads.get(`${i}`)!, tol, `clipped grad ${i}`);
            ts[i].dispose();
          }
        },
      ),
      fcParams(15),
    );
  },
});

Deno.test({
  name: "globalGradNorm() covers several windows of a 100000-element gradient deterministically",
  ...GPU_TEST,
  fn: async () => {
    const d = randomArray(100000, 3, -1, 1);
    using g = Tensor.fromArray(gpu, d, [100000]);
    using a = globalGradNorm([g], { maxBindingBytes: 40000 });
    using b = globalGradNorm([g], { maxBindingBytes: 40000 });
    using c = globalGradNorm([g]);
    let ss = 0;
    for (const x of d) ss += x * x;
    const [ra, rb, rc] = [await a.toArray(), await b.toArray(), await c.toArray()];
    assertClose(ra, [Math.sqrt(ss)], { atol: 0, rtol: 1e-5 }, "windowed norm");
    assertClose(rc, [Math.sqrt(ss)], { atol: 0, rtol: 1e-5 }, "norm");
    assert.deepEqual(rb, ra);
  },
});

Deno.test({
  name: "AdamW matches the f64 torch.optim.AdamW reference over steps, shapes and hyper-parameters",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(
        shapesArb,
        fc.integer(),
        fc.constantFrom(1e-3, 3e-5, 0.1),
        fc.constantFrom([0.9, 0.95] as const, [0.9, 0.999] as const, [0.5, 0.6] as const),
        fc.constantFrom(0, 0.01, 0.1),
        fc.boolean(),
        async (shapes, seed, lr, betas, weightDecay, small) => {
          const opts = { lr, betas, eps: 1e-8, weightDecay };
          const w0 = shapes.map((s, i) => randomArray(numel(s), seed + i, -1, 1));
          const params = w0.map((d, i) => Tensor.fromArray(gpu, d, shapes[i]));
          const opt = new AdamW(params, { ...opts, maxBindingBytes: small ? 16384 : undefined });
          const ref = new Map(w0.map((d, i) => [`${i}`, Float64Array.from(d)]));
          const state = newAdamwState(ref);
          for (let step = 0; step < 3; step++) {
            const gd = shapes.map((s, i) =>
              randomArray(numel(s), seed + 100 * (step + 1) + i, -1, 1)
            );
            const grads = gd.map((d, i) => Tensor.fromArray(gpu, d, shapes[i]));
            opt.step(grads);
            adamwReferenceStep(
              ref,
              new Map(gd.map((d, i) => [`${i}`, Float64Array.from(d)])),
              state,
              opts,
            );
            grads.forEach((g) => g.dispose());
          }
          assert.equal(opt.stepCount, 3);
          for (let i = 0; i < params.length; i++) {
            // f32 state: the update's relative error is ~1e-6 of lr, on weights of size ~1.
            assertClose(
              await params[i].toArray(),
              ref.get(`${i}`)!,
              { atol: 1e-6, rtol: 1e-5 },
              `param ${i}`,
            );
          }
          const st = await opt.exportState();
          assertClose(st.m[0], state.m.get("0")!, { atol: 1e-7, rtol: 1e-5 }, "m");
          assertClose(st.v[0], state.v.get("0")!, { atol: 1e-9, rtol: 1e-5 }, "v");
          opt.dispose();
          params.forEach((p) => p.dispose());
        },
      ),
      fcParams(12),
    );
  },
});

Deno.test({
  name: "AdamW gives torch's values, computed by hand, for two steps (decay, bias correction)",
  ...GPU_TEST,
  fn: async () => {
    // p = 1, g = 0.5 twice, lr 0.1, β (0.9, 0.999), eps 1e-8, wd 0.01:
    // step 1: p = 1·0.999 − 0.1/0.1·0.05/(√(0.00025/0.001) + 1e-8) = 0.999 − 0.1·0.5/0.50000001
    //         = 0.899000002;
    // step 2: m = 0.095, v = 0.00049975, 1 − β1² = 0.19, 1 − β2² = 0.001999, √(v/0.001999) = 0.5:
    //         p = 0.899000002·0.999 − (0.1/0.19)·0.095/0.50000001 = 0.798101004.
    // p = −2, g = −3, wd 0: Adam's first step is −lr·sign(g): −1.9, then −1.8.
    using p = Tensor.fromArray(gpu, [1, -2], [2]);
    using g = Tensor.fromArray(gpu, [0.5, -3], [2]);
    using opt = new AdamW([p], { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01 });
    opt.step([g]);
    const s1 = await p.toArray();
    opt.step([g]);
    const s2 = await p.toArray();
    assertClose([s1[0], s2[0]], [0.899000002, 0.798101004], { atol: 0, rtol: 2e-7 }, "p (wd 0.01)");
    // The second entry decays too (wd applies to all): −2·0.999 + 0.1 = −1.898, then
    // −1.898·0.999 + 0.1 = −1.796102.
    assertClose([s1[1], s2[1]], [-1.898, -1.796102], { atol: 0, rtol: 2e-7 }, "p (negative g)");
    using q = Tensor.fromArray(gpu, [-2], [1]);
    using h = Tensor.fromArray(gpu, [-3], [1]);
    using opt2 = new AdamW([q], { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 });
    opt2.step([h]);
    opt2.step([h]);
    assertClose(await q.toArray(), [-1.8], { atol: 0, rtol: 2e-7 }, "p (wd 0)");
  },
});

Deno.test({
  name:
    "AdamW state exported after two steps and imported into a new optimizer resumes bit-exactly",
  ...GPU_TEST,
  fn: async () => {
    const w = randomArray(5000, 1), g1 = randomArray(5000, 2), g2 = randomArray(5000, 3);
    const g3 = randomArray(5000, 4);
    const opts = { lr: 0.01, betas: [0.9, 0.95] as const, eps: 1e-8, weightDecay: 0.1 };
    using p = Tensor.fromArray(gpu, w, [50, 100]);
    using grads = Tensor.fromArray(gpu, g1, [50, 100]);
    using a = new AdamW([p], opts);
    a.step([grads]);
    grads.write(g2);
    a.step([grads]);
    const state = await a.exportState();
    const mid = await p.toArray();
    grads.write(g3);
    a.step([grads]);
    const straight = await p.toArray();
    using p2 = Tensor.fromArray(gpu, mid, [50, 100]);
    using b = new AdamW([p2], opts);
    b.importState(state);
    assert.equal(b.stepCount, 2);
    b.step([grads]);
    assert.deepEqual(await p2.toArray(), straight);
    assert.throws(() => b.importState({ ...state, m: [] }), /0 m and 1 v arrays for 1 parameters/);
    assert.throws(
      () => b.importState({ ...state, v: [new Float32Array(3)] }),
      /v\[0\] has 3 values, params\[0\] \[50, 100\] 5000/,
    );
  },
});

Deno.test({
  name: "AdamW and clipGradients() reject bad inputs, naming the argument",
  ...GPU_TEST,
  fn: () => {
    using p = Tensor.zeros(gpu, [2, 3]);
    using g = Tensor.zeros(gpu, [3, 2]);
    using opt = new AdamW([p], { lr: 0.1, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0 });
    assert.throws(() => opt.step([g]), /grads\[0\] \[3, 2\] does not match params\[0\] \[2, 3\]/);
    assert.throws(() => opt.step([]), /0 gradients for 1 parameters/);
    assert.throws(
      () => new AdamW([p], { lr: -1, betas: [0.9, 0.9], eps: 0, weightDecay: 0 }),
      /lr/,
    );
    assert.throws(
      () => new AdamW([p], { lr: 1, betas: [0.9, 1], eps: 0, weightDecay: 0 }),
      /betas\[1\]/,
    );
    using i = Tensor.zeros(gpu, [2], "i32");
    assert.throws(() => globalGradNorm([i]), /grads\[0\] must be f32/);
    assert.throws(() => clipGradients([p], 0), /maxNorm/);
    assert.throws(() => globalGradNorm([]), /grads is empty/);
  },
});
