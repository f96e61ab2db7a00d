/**
 * Demo rows for the row-wise op families (softmax, reductions, sampling):
 * each op once on seeded random inputs, compared with its CPU reference.
 *
 * @module
 */
import {
  argmax,
  argmaxReference,
  type Gpu,
  logSoftmax,
  MASKED,
  max,
  randomTensor,
  reduceReference,
  sample,
  sampleReference,
  sampleUniform,
  softmax,
  softmaxReference,
  sum,
  Tensor,
} from "@hyperscale/dms/ops";
import { roundToF16 } from "../src/tensor/dtype.ts";

function maxErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Rows `[op, shape, max |gpu − cpu|]` (for argmax and sample: the number of mismatches). */
export async function extraKernelChecks(
  gpu: Gpu,
  dtype: "f32" | "f16",
): Promise<[string, string, number][]> {
  const rows: [string, string, number][] = [];
  const [R, N] = [7, 300];
  using x = randomTensor(gpu, [R, N], { seed: 21, dist: "normal", std: 2, dtype });
  const xv = await x.toArray() as Float32Array;
  const maskv = new Float32Array(N).map((_, i) => (i % 5 === 0 ? MASKED : 0));
  using mask = Tensor.fromArray(gpu, maskv, [N], dtype);
  const round = (a: ArrayLike<number>) => (dtype === "f16" ? roundToF16(a) : a);
  const mref = { data: maskv, shape: [N] };
  {
    using p = softmax(x, { mask });
    rows.push([
      "softmax (masked)",
      `[${R},${N}]`,
      maxErr(await p.toArray(), round(softmaxReference(xv, [R, N], { mask: mref }))),
    ]);
  }
  {
    using p = logSoftmax(x);
    rows.push([
      "logSoftmax",
      `[${R},${N}]`,
      maxErr(await p.toArray(), round(softmaxReference(xv, [R, N], { log: true }))),
    ]);
  }
  {
    using s = sum(x);
    const ref = reduceReference("sum", xv, N);
    // relative: a sum of 300 values
    rows.push([
      "sum",
      `[${R},${N}]`,
      maxErr(await s.toArray(), round(ref)) / Math.max(1, ...Array.from(ref, Math.abs)),
    ]);
  }
  {
    using m = max(x);
    rows.push([
      "max",
      `[${R},${N}]`,
      maxErr(await m.toArray(), round(reduceReference("max", xv, N))),
    ]);
  }
  {
    using a = argmax(x);
    const got = await a.toArray(), ref = argmaxReference(xv, N);
    rows.push([
      "argmax (mismatches)",
      `[${R},${N}]`,
      Array.from(got).filter((v, i) => v !== ref[i]).length,
    ]);
  }
  {
    using logits = randomTensor(gpu, [R, 5000], { seed: 5, dist: "normal", std: 3 });
    const lv = await logits.toArray() as Float32Array;
    const opts = { temperature: 0.8, topK: 40, topP: 0.9, seed: 11 };
    using ids = sample(logits, { ...opts, step: 3 });
    const got = await ids.toArray();
    let bad = 0;
    for (let r = 0; r < R; r++) {
      if (
        got[r] !==
          sampleReference(lv.subarray(r * 5000, (r + 1) * 5000), opts, sampleUniform(11, 3, r))
      ) bad++;
    }
    rows.push(["sample top-k/top-p (mismatches)", `[${R},5000]`, bad]);
  }
  return rows;
}
