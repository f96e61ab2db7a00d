/**
 * `Tape`: reverse-mode automatic differentiation over GPU tensors, the way llm.c pairs each
 * `op_forward` with its `op_backward`: the forward code calls an op, then records a closure that
 * launches the op's backward kernels; {@linkcode Tape.backward} runs the closures in reverse
 * order. Gradients live in the tape, keyed by tensor identity (a `reshape` view is another
 * tensor: record a backward that moves the gradient across when you make one).
 *
 * Conventions (issue 9; SPEC §6 gives the objective the tape differentiates):
 * - **Leaves** (parameters) are marked with {@linkcode Tape.requiresGrad}; their gradients stay
 *   in the tape after `backward()` (read them with `grad()`, take them with `takeGrad()`).
 * - A **record** names its `outputs` (tensors the op made; they then count as needing a
 *   gradient) and the tensors it `saves` (activations its backward reads). After its backward
 *   ran, the tape disposes the saved tensors and the gradients of its outputs (nothing earlier
 *   in the tape can add to them), so activation memory falls as the tape unwinds.
 * - {@linkcode Tape.accumulate} takes ownership of the gradient it is given and sums into an
 *   existing one with the `add` op, in record order: results are deterministic (no atomics).
 * - Ops skip work for inputs that do not need a gradient: `tape.needsGrad(x)`.
 * - **Checkpointing** ({@linkcode Tape.checkpoint}): a segment (e.g. one transformer layer) runs
 *   forward without saving anything; its backward re-runs the forward on a fresh inner tape,
 *   back-propagates through it and hands the inputs' and leaves' gradients to this tape. Peak
 *   memory: one segment's activations instead of all of them, for one more forward per segment.
 *   The segment must be deterministic (noise from `(seed, step, layer)`, see noise.ts).
 *
 * Nothing here reads back to the CPU; everything is recorded into the device's shared encoder.
 *
 * @example y = (a + b) · a, dy/da and dy/db
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { add, mul, scale } from "../ops/elementwise.ts";
 * import { Tape } from "./tape.ts";
 * const gpu = await getGpu();
 * const tape = new Tape();
 * const a = tape.requiresGrad(Tensor.fromArray(gpu, [1, 2], [2]));
 * const b = tape.requiresGrad(Tensor.fromArray(gpu, [3, 4], [2]));
 * const s = add(a, b);
 * tape.record("add", () => {
 *   const g = tape.grad(s)!;
 *   tape.accumulate(a, scale(g, 1)); // d(a+b)/da = 1: a copy of g (accumulate takes ownership)
 *   tape.accumulate(b, scale(g, 1));
 * }, { outputs: [s] });
 * const y = mul(s, a);
 * tape.record("mul", () => {
 *   const g = tape.grad(y)!;
 *   tape.accumulate(s, mul(g, a));
 *   tape.accumulate(a, mul(g, s));
 * }, { outputs: [y], saves: [s] });
 * tape.backward(y); // seeds dy = 1
 * console.log(await tape.grad(a)!.toArray(), await tape.grad(b)!.toArray()); // [5, 8] [1, 2]
 * tape.dispose();
 * ```
 *
 * @module
 */

import { add } from "../ops/elementwise.ts";
import { fmtShape, Tensor } from "../tensor/tensor.ts";

/** What a record owns besides its backward closure. */
export interface RecordOptions {
  /** Tensors the op produced: they need a gradient; theirs is dropped after this backward ran. */
  outputs?: readonly Tensor[];
  /** Tensors the backward reads (activations): disposed after this backward ran. */
  saves?: readonly Tensor[];
}

interface Entry {
  name: string;
  backward: () => void;
  outputs: readonly Tensor[];
  saves: readonly Tensor[];
}

/** A reverse-mode tape; see the module documentation for the conventions. */
export class Tape {
  #entries: Entry[] = [];
  #grads = new Map<Tensor, Tensor>();
  #leaves = new Set<Tensor>();
  #tracked = new Set<Tensor>();
  #parent: Tape | undefined;
  #enabled: boolean;
  #running = false;

  /**
   * Creates an empty tape.
   *
   * @param options `enabled: false` makes a tape that records nothing (inference, or the
   *   forward of a checkpointed segment): `needsGrad` is false, `record` disposes the saves.
   */
  constructor(options: { enabled?: boolean } = {}) {
    this.#enabled = options.enabled ?? true;
  }

  /** Whether records are kept. */
  get enabled(): boolean {
    return this.#enabled;
  }

  /** Number of records not yet run backward. */
  get length(): number {
    return this.#entries.length;
  }

  /** Marks a leaf (a trainable parameter) whose gradient is kept after `backward()`; returns it. */
  requiresGrad<T extends Tensor>(t: T): T {
    if (this.#enabled) {
      this.#leaves.add(t);
      this.#tracked.add(t);
    }
    return t;
  }

  /** Whether `t` is a leaf marked by {@linkcode Tape.requiresGrad} (here or in a parent tape). */
  isLeaf(t: Tensor): boolean {
    return this.#leaves.has(t) || (this.#parent?.isLeaf(t) ?? false);
  }

  /** Whether a gradient must flow to `t`: a leaf, or an output of a record (here or in a parent). */
  needsGrad(t: Tensor): boolean {
    if (!this.#enabled) return false;
    return this.#tracked.has(t) || (this.#parent?.needsGrad(t) ?? false);
  }

  /**
   * Records the backward of an op, in forward order.
   *
   * @param name Shown in errors (e.g. `"layer 3 o_proj"`).
   * @param backward Reads `grad(output)` and `accumulate()`s into the inputs that need it.
   * @param options `outputs` and `saves` (see {@linkcode RecordOptions}).
   */
  record(name: string, backward: () => void, options: RecordOptions = {}): void {
    if (this.#running) throw new Error(`Tape.record("${name}") during backward()`);
    if (!this.#enabled) {
      for (const t of options.saves ?? []) t.dispose();
      return;
    }
    const outputs = options.outputs ?? [];
    for (const t of outputs) this.#tracked.add(t);
    this.#entries.push({ name, backward, outputs, saves: options.saves ?? [] });
  }

  /** The accumulated gradient of `t` (owned by the tape), or undefined when none arrived. */
  grad(t: Tensor): Tensor | undefined {
    return this.#grads.get(t);
  }

  /** Removes the gradient of `t` from the tape and gives it to the caller (who disposes it). */
  takeGrad(t: Tensor): Tensor | undefined {
    const g = this.#grads.get(t);
    this.#grads.delete(t);
    return g;
  }

  /**
   * Adds `g` to the gradient of `t`, taking ownership of `g` (the tape disposes it).
   * The first gradient is kept as is; later ones are summed with `add` in call order.
   *
   * @throws {RangeError} When `g`'s shape differs from `t`'s.
   */
  accumulate(t: Tensor, g: Tensor): void {
    if (g.size !== t.size || g.rank !== t.rank || g.shape.some((d, i) => d !== t.shape[i])) {
      g.dispose();
      throw new RangeError(
        `Tape.accumulate: gradient ${fmtShape(g.shape)} does not match tensor ${fmtShape(t.shape)}`,
      );
    }
    const old = this.#grads.get(t);
    if (!old) {
      this.#grads.set(t, g);
      return;
    }
    const sum = add(old, g);
    old.dispose();
    g.dispose();
    this.#grads.set(t, sum);
  }

  /**
   * Runs the records in reverse order, freeing each record's saved tensors and its outputs'
   * gradients once it ran. With `loss`, seeds its gradient first: `seed` (taken over) or ones.
   * Afterwards the tape is empty of records; leaves' gradients remain until `dispose()`.
   */
  backward(loss?: Tensor, seed?: Tensor): void {
    if (loss) {
      this.accumulate(loss, seed ?? Tensor.fromArray(loss.gpu, ones(loss.size), loss.shape));
    }
    this.#running = true;
    try {
      while (this.#entries.length) {
        const e = this.#entries.pop()!;
        try {
          e.backward();
        } catch (err) {
          throw new Error(`backward of "${e.name}" failed: ${(err as Error).message}`, {
            cause: err,
          });
        } finally {
          for (const t of e.saves) t.dispose();
          for (const t of e.outputs) if (!this.isLeaf(t)) this.takeGrad(t)?.dispose();
        }
      }
    } finally {
      this.#running = false;
    }
  }

  /**
   * A gradient-checkpointed segment: `fn(tape, inputs)` runs now on a tape that records
   * nothing, and its outputs are returned; during `backward()`, the segment's forward runs again
   * on a recording inner tape (whose `needsGrad` sees this tape's leaves and the segment's
   * inputs), the outputs' gradients are moved onto the recomputed outputs, the inner tape is
   * unwound, and every gradient it produced for a tensor from outside the segment (inputs,
   * leaves) is accumulated here. `fn` must be deterministic and must not dispose `inputs`.
   *
   * @example One layer checkpointed: `const [h2] = tape.checkpoint("layer 0", [h], (t, [x]) => [layer(t, x)]);`
   *
   * @param name Record name.
   * @param inputs Activations the segment reads (parameters may be closed over instead).
   * @param fn The segment's forward, recording its ops on the tape it is given.
   * @returns The segment's outputs (owned by the caller, as a normal op's outputs).
   */
  checkpoint(
    name: string,
    inputs: readonly Tensor[],
    fn: (tape: Tape, inputs: readonly Tensor[]) => Tensor[],
  ): Tensor[] {
    const outputs = fn(this.#enabled ? new Tape({ enabled: false }) : this, inputs);
    if (!this.#enabled) return outputs;
    this.record(name, () => {
      const inner = new Tape();
      inner.#parent = this;
      for (const t of inputs) if (this.needsGrad(t)) inner.#tracked.add(t);
      const again = fn(inner, inputs);
      if (again.length !== outputs.length) {
        throw new Error(
          `checkpoint "${name}": ${again.length} outputs on recompute, ${outputs.length} before`,
        );
      }
      for (let i = 0; i < outputs.length; i++) {
        const g = this.takeGrad(outputs[i]);
        if (g) inner.accumulate(again[i], g);
      }
      inner.backward();
      for (const t of again) {
        inner.takeGrad(t)?.dispose();
        if (!inputs.includes(t)) t.dispose();
      }
      for (const [t, g] of inner.#grads) this.accumulate(t, g);
      inner.#grads.clear();
      inner.dispose();
    }, { outputs });
    return outputs;
  }

  /** Disposes every gradient and the saved tensors of records that never ran backward. */
  dispose(): void {
    for (const e of this.#entries) for (const t of e.saves) t.dispose();
    this.#entries = [];
    for (const g of this.#grads.values()) g.dispose();
    this.#grads.clear();
    this.#leaves.clear();
    this.#tracked.clear();
  }

  /** `using tape = new Tape()` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}

function ones(n: number): Float32Array {
  return new Float32Array(n).fill(1);
}
