/**
 * The cache-free oracle of greedy generation, shared by the generation tests: every step
 * recomputed from scratch with a teacher-mode full forward over the whole sequence.
 *
 * @module
 */

import type { Model } from "../src/model/model.ts";
import { Tensor } from "../src/tensor/tensor.ts";
import { gpu } from "./_util.ts";

/** Greedy continuation of `prompt` by `n` tokens, each from a full forward (no cache). */
export async function greedyByFullForward(
  model: Model,
  prompt: readonly number[],
  n: number,
): Promise<number[]> {
  const seq = [...prompt];
  for (let i = 0; i < n; i++) {
    using ids = Tensor.fromArray(gpu, seq, [1, seq.length], "i32");
    using pos = Tensor.fromArray(gpu, seq.map((_, j) => j), [1, seq.length], "i32");
    using lg = model.forward(ids, { mode: "teacher", positions: pos, logits: "last" })!;
    const l = await lg.toArray();
    let best = 0;
    for (let v = 1; v < l.length; v++) if (l[v] > l[best]) best = v;
    seq.push(best);
  }
  return seq.slice(prompt.length);
}
