/** Shared helpers of the safetensors tests: temp folders, an independent decoder, arbitraries. */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  dtypeBytes,
  SAFETENSORS_DTYPES,
  type SafetensorsDtype,
} from "../../src/io/safetensors_codec.ts";

/** The conformance folder (golden vectors) beside the repository. */
export const CONFORMANCE: string = new URL("../../testdata/conformance/", import.meta.url).pathname;
const RUNS = Number(Deno.env.get("FC_RUNS")) || 0;
/** fast-check parameters: `n` runs, or `FC_RUNS` from the environment. */
export const runs = (n: number): { numRuns: number } => ({ numRuns: RUNS > 0 ? RUNS : n });

/** Runs `fn` with a fresh temp dir, removed afterwards. */
export async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dms_st_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Independent scalar decoder of stored bytes (DataView, no typed-array tricks). */
export function refDecode(dtype: SafetensorsDtype, bytes: Uint8Array): number[] {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n = bytes.byteLength / dtypeBytes(dtype), out: number[] = [];
  for (let i = 0; i < n; i++) {
    switch (dtype) {
      case "F32":
        out.push(v.getFloat32(4 * i, true));
        break;
      case "BF16": {
        const b = new DataView(new ArrayBuffer(4));
        b.setUint16(0, v.getUint16(2 * i, true));
        out.push(b.getFloat32(0));
        break;
      }
      case "F16": {
        const h = v.getUint16(2 * i, true);
        const s = h >> 15 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
        out.push(
          e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) *
            2 ** (e - 15),
        );
        break;
      }
      case "I32":
        out.push(v.getInt32(4 * i, true));
        break;
      case "I64":
        out.push(Number(v.getBigInt64(8 * i, true)));
        break;
      default:
        out.push(v.getUint8(i));
    }
  }
  return out;
}

/** Element-wise equality that treats NaN = NaN and distinguishes -0 from 0. */
export function assertSameValues(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  what: string,
): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i])) {
      assert.fail(`${what}: index ${i}: got ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

/** Random stored bytes that are valid for the dtype (I64 within int32, BOOL 0/1). */
export function bytesArb(dtype: SafetensorsDtype, n: number): fc.Arbitrary<Uint8Array> {
  if (dtype === "I64") {
    return fc.array(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), {
      minLength: n,
      maxLength: n,
    }).map((v) => new Uint8Array(BigInt64Array.from(v.map(BigInt)).buffer));
  }
  if (dtype === "BOOL") {
    return fc.array(fc.integer({ min: 0, max: 1 }), { minLength: n, maxLength: n })
      .map((v) => Uint8Array.from(v));
  }
  const len = n * dtypeBytes(dtype);
  return fc.uint8Array({ minLength: len, maxLength: len });
}

/** A random tensor of any dtype, rank 0-3, as valid stored bytes. */
export const tensorArb: fc.Arbitrary<
  { dtype: SafetensorsDtype; shape: number[]; bytes: Uint8Array }
> = fc
  .record({
    dtype: fc.constantFrom(...SAFETENSORS_DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }),
  }).chain(({ dtype, shape }) =>
    bytesArb(dtype, shape.reduce((a, b) => a * b, 1)).map((bytes) => ({ dtype, shape, bytes }))
  );

/** A file from a raw header (object or text) and a data section. */
export function rawFile(header: unknown, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header),
  );
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}
