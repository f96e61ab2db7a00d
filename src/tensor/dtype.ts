/**
 * Element types of tensors and their CPU conversions (f32 ↔ f16 ↔ bf16).
 *
 * @module
 */

/** Tensor element type. `f16` needs the device's `shader-f16` feature. */
export type DType = "f32" | "f16" | "i32" | "u32";

/** Float dtypes an op can compute on (the storage type `T` of the float kernels). */
export type FloatDType = "f32" | "f16";

/** CPU array type returned by `Tensor.toArray()` for each dtype (f16 is widened to f32). */
export type ArrayFor<D extends DType> = D extends "i32" ? Int32Array
  : D extends "u32" ? Uint32Array
  : Float32Array;

/** Bytes per element. */
export function bytesPer(dtype: DType): number {
  return dtype === "f16" ? 2 : 4;
}

/** The WGSL scalar type of a dtype. */
export function wgslType(dtype: DType): string {
  return dtype;
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Converts one f32 value to IEEE half bits (round to nearest even). */
export function f32ToF16Bits(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++;
  if ((half & 0x7c00) === 0x7c00) e = 0x1f;
  return sign | half;
}

/** Converts IEEE half bits to a number. */
export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Converts bfloat16 bits to a number (exact). */
export function bf16BitsToF32(h: number): number {
  u32[0] = (h & 0xffff) << 16;
  return f32[0];
}

/** Rounds every value to the nearest f16 (what an f16 tensor stores). */
export function roundToF16(data: ArrayLike<number>): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f16BitsToF32(f32ToF16Bits(data[i]));
  return out;
}

/** Packs numbers into f16 bits. */
export function toF16Bits(data: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = f32ToF16Bits(data[i]);
  return out;
}

/** Unpacks f16 bits into f32. */
export function fromF16Bits(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = f16BitsToF32(bits[i]);
  return out;
}
