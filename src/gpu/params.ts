/**
 * Uniforms: kernel parameters packed by field name against the WGSL
 * `struct Params` of the shader (parsed by {@linkcode parseParamLayout}), and
 * the per-batch uniform arenas they are written into.
 *
 * A launcher passes a plain object, `gpu.dispatch(k, bufs, wg, { rows, d, eps })`;
 * each value is checked against its field's type (u32: integer 0..2^32-1, i32:
 * integer -2^31..2^31-1, f32: any number but NaN) and written at the field's
 * offset. A missing, unknown or mistyped field is an error naming the kernel and
 * the field. No uniform is packed by position.
 *
 * @module
 */

import type { ParamLayout } from "./shader.ts";

/** Bytes of one uniform block (the dynamic-offset alignment, and the largest `Params`). */
export const UNIFORM_BYTES = 256;
/** Uniform blocks per arena buffer (64 KiB, the minimum maxUniformBufferBindingSize). */
const ARENA_SLOTS = 256;

/** Kernel parameters by `struct Params` field name, e.g. `{ rows: 4, d: 64, eps: 1e-6 }`. */
export type ParamValues = Readonly<Record<string, number>>;

/**
 * Writes `values` into `view` at `offset`, field by field as `layout` declares them.
 *
 * @param label Kernel label, for error messages.
 * @param layout The entry point's uniform struct, or `undefined` when it uses no uniform.
 * @throws {TypeError} For a missing or unknown field, or a value that is not a number.
 * @throws {RangeError} For NaN, a non-integer or out-of-range u32/i32.
 */
export function packParams(
  label: string,
  layout: ParamLayout | undefined,
  values: ParamValues,
  view: DataView,
  offset = 0,
): void {
  if (typeof values !== "object" || values === null) {
    throw new TypeError(`${label}: params must be an object of struct fields, got ${values}`);
  }
  const fields = layout?.fields ?? [];
  for (const f of fields) {
    const v = values[f.name];
    if (v === undefined) {
      throw new TypeError(
        `${label}: missing param "${f.name}" (${f.type}) of struct ${layout!.struct}`,
      );
    }
    if (typeof v !== "number") {
      throw new TypeError(
        `${label}: param "${f.name}" must be a number (${f.type}), got ${typeof v}`,
      );
    }
    const o = offset + f.offset;
    if (f.type === "f32") {
      if (Number.isNaN(v)) throw new RangeError(`${label}: param "${f.name}" (f32) is NaN`);
      view.setFloat32(o, v, true);
    } else if (f.type === "u32") {
      if (!(Number.isInteger(v) && v >= 0 && v <= 0xffffffff)) {
        throw new RangeError(
          `${label}: param "${f.name}" must be an integer in 0..2^32-1 (u32), got ${v}`,
        );
      }
      view.setUint32(o, v, true);
    } else {
      if (!(Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff)) {
        throw new RangeError(
          `${label}: param "${f.name}" must be an integer in -2^31..2^31-1 (i32), got ${v}`,
        );
      }
      view.setInt32(o, v, true);
    }
  }
  let n = 0;
  for (const _ in values) n++;
  if (n !== fields.length) {
    if (!layout) assertNoParams(label, values);
    const known = new Set(fields.map((f) => f.name));
    const extra = Object.keys(values).filter((k) => !known.has(k));
    throw new TypeError(
      `${label}: unknown param "${extra[0]}" (struct ${layout!.struct} has ${
        fields.map((f) => f.name).join(", ")
      })`,
    );
  }
}

/**
 * Throws unless `params` is empty (`{}`): for entry points that use no uniform.
 *
 * @throws {TypeError} Naming the kernel and the first field given.
 */
export function assertNoParams(label: string, params: ParamValues): void {
  for (const name in params) {
    throw new TypeError(
      `${label}: takes no params (its entry point uses no uniform), got "${name}"`,
    );
  }
}

/**
 * Uniform blocks of the dispatches recorded since the last submit: 256-byte slots
 * of arena buffers, selected by dynamic offsets (so bind groups stay cacheable),
 * staged on the CPU and uploaded with one write per arena before the submit.
 */
export class UniformArenas {
  #device: GPUDevice;
  #arenas: GPUBuffer[] = [];
  #staging: Uint8Array<ArrayBuffer>[] = [];
  #views: DataView[] = [];
  #slots = 0;

  /** @param device Device that owns the arena buffers. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /**
   * Takes the next slot and writes the uniform block into it.
   *
   * @param label Kernel label (errors).
   * @param layout The entry point's uniform struct.
   * @param params Fields by name.
   * @returns The arena index and the slot's byte offset in it.
   * @throws {TypeError} When `params` is missing, or a field is (see {@linkcode packParams}).
   */
  push(
    label: string,
    layout: ParamLayout | undefined,
    params: ParamValues | undefined,
  ): { arena: number; offset: number } {
    if (!params) {
      throw new TypeError(
        `${label}: missing uniform params { ${layout?.fields.map((f) => f.name).join(", ")} } ` +
          `(struct ${layout?.struct})`,
      );
    }
    const slot = this.#slots;
    const arena = Math.floor(slot / ARENA_SLOTS);
    const offset = (slot % ARENA_SLOTS) * UNIFORM_BYTES;
    this.#ensure(arena);
    packParams(label, layout, params, this.#views[arena], offset);
    this.#slots++;
    return { arena, offset };
  }

  /** Slots taken since the last upload (the next dispatch's slot). */
  get slots(): number {
    return this.#slots;
  }

  /** A copy of the uniform block at `offset` of arena `a` as staged (for step traces). */
  block(a: number, offset: number): Uint8Array {
    return this.#staging[a].slice(offset, offset + UNIFORM_BYTES);
  }

  /**
   * Takes the next slot for a replayed dispatch and writes `bytes` (a traced block) into it;
   * returns the slot's words for patching.
   *
   * @throws {Error} When the slot is not at `arena`, `offset` where the trace had it.
   */
  pushBlock(bytes: Uint8Array, arena: number, offset: number): Int32Array {
    const slot = this.#slots;
    const a = Math.floor(slot / ARENA_SLOTS);
    const o = (slot % ARENA_SLOTS) * UNIFORM_BYTES;
    if (a !== arena || o !== offset) {
      throw new Error(
        `replay: uniform slot ${slot} is at arena ${a} offset ${o}, the trace had arena ` +
          `${arena} offset ${offset}`,
      );
    }
    this.#ensure(a);
    this.#staging[a].set(bytes, o);
    this.#slots++;
    return new Int32Array(this.#staging[a].buffer, o, UNIFORM_BYTES / 4);
  }

  /** The GPU buffer of arena `a`. */
  buffer(a: number): GPUBuffer {
    return this.#arenas[a];
  }

  /** Queues the upload of every slot written since the last upload and starts over. */
  upload(): void {
    for (let a = 0; a * ARENA_SLOTS < this.#slots; a++) {
      const used = Math.min(ARENA_SLOTS, this.#slots - a * ARENA_SLOTS) * UNIFORM_BYTES;
      this.#device.queue.writeBuffer(this.#arenas[a], 0, this.#staging[a], 0, used);
    }
    this.#slots = 0;
  }

  #ensure(a: number): void {
    while (this.#arenas.length <= a) {
      this.#arenas.push(this.#device.createBuffer({
        size: ARENA_SLOTS * UNIFORM_BYTES,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        label: `uniform arena ${this.#arenas.length}`,
      }));
      const bytes = new Uint8Array(ARENA_SLOTS * UNIFORM_BYTES);
      this.#staging.push(bytes);
      this.#views.push(new DataView(bytes.buffer));
    }
  }
}
