import assert from "node:assert/strict";
import fc from "fast-check";
import { decodeSafetensors, f32ToBf16Bits } from "../../src/io/safetensors_codec.ts";
import { openSafetensors } from "../../src/io/safetensors_reader.ts";
import { encodeSafetensors, type TensorInput } from "../../src/io/safetensors_writer.ts";
import { assertSameValues, refDecode, runs, withTmp } from "./_safetensors_util.ts";

Deno.test("writeSafetensors converts values: F32 exact, F16/BF16 representable values exact, integers exact", async () => {
  await fc.assert(
    fc.property(
      fc.array(fc.float({ noNaN: false }), { minLength: 1, maxLength: 40 }),
      fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 1, maxLength: 40 }),
      fc.array(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { minLength: 1, maxLength: 40 }),
      (f32, bits, ints) => {
        const h = new Uint8Array(Uint16Array.from(bits).buffer);
        const f16 = refDecode("F16", h).filter((x) => !Number.isNaN(x));
        const bf16 = refDecode("BF16", h).filter((x) => !Number.isNaN(x));
        const inputs: Record<string, TensorInput> = {
          f32: { dtype: "F32", shape: [f32.length], data: f32 },
          f16: { dtype: "F16", shape: [f16.length], data: f16 },
          bf16: { dtype: "BF16", shape: [bf16.length], data: bf16 },
          i32: { dtype: "I32", shape: [ints.length], data: ints },
          i64: { dtype: "I64", shape: [ints.length], data: ints },
          u8: { dtype: "U8", shape: [ints.length], data: ints.map((x) => x & 255) },
          bool: { dtype: "BOOL", shape: [ints.length], data: ints.map((x) => x & 1) },
        };
        const { tensors } = decodeSafetensors(encodeSafetensors(inputs));
        for (const [name, t] of Object.entries(inputs)) {
          const expect = name === "f32"
            ? Array.from(Float32Array.from(f32))
            : Array.from((t as { data: ArrayLike<number> }).data);
          assertSameValues(tensors[name].data, expect, name);
        }
      },
    ),
    runs(50),
  );
});

Deno.test("BF16 and F16 writing rounds to nearest even", () => {
  const f32 = (bits: number) => new Float32Array(new Uint32Array([bits]).buffer)[0];
  assert.equal(f32ToBf16Bits(f32(0x3f808000)), 0x3f80); // tie, even below
  assert.equal(f32ToBf16Bits(f32(0x3f818000)), 0x3f82); // tie, even above
  assert.equal(f32ToBf16Bits(f32(0x3f808001)), 0x3f81); // just above the tie
  assert.equal(f32ToBf16Bits(f32(0x7f7fffff)), 0x7f80); // max f32 rounds to +inf
  assert.equal(f32ToBf16Bits(-0), 0x8000);
  assert.ok(
    Number.isNaN(
      refDecode("BF16", new Uint8Array(new Uint16Array([f32ToBf16Bits(NaN)]).buffer))[0],
    ),
  );
  const { tensors } = decodeSafetensors(encodeSafetensors({
    h: { dtype: "F16", shape: [3], data: [1 + 2 ** -11, 1 + 3 * 2 ** -11, 70000] },
  }));
  assert.deepEqual(Array.from(tensors.h.data), [1, 1 + 2 ** -9, Infinity]);
});

Deno.test("I64 values outside int32 are rejected on read, naming the tensor and element", async () => {
  const bytes = encodeSafetensors({
    ids: {
      dtype: "I64",
      shape: [3],
      bytes: new Uint8Array(BigInt64Array.from([1n, -(2n ** 31n), 2n ** 31n]).buffer),
    },
  });
  assert.throws(
    () => decodeSafetensors(bytes, "ids.safetensors"),
    /ids.safetensors: tensor "ids" \(I64\): element 2 = 2147483648 does not fit in int32/,
  );
  await withTmp(async (dir) => {
    await Deno.writeFile(`${dir}/ids.safetensors`, bytes);
    using file = await openSafetensors(`${dir}/ids.safetensors`, { chunkBytes: 8 });
    assert.deepEqual(Array.from((await file.read("ids", { rowEnd: 2 })).data), [1, -(2 ** 31)]);
    await assert.rejects(file.read("ids"), /tensor "ids" \(I64\): element 2 = 2147483648/);
    await assert.rejects(file.read("ids", { rowStart: 2 }), /element 2 = 2147483648/);
  });
});
