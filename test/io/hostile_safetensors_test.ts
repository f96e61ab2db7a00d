/**
 * Hostile safetensors files and sharded indexes (issue 13, first part): every malformed input
 * ends in a TypeError, RangeError or SyntaxError whose message names the file — never another
 * kind of exception, never an allocation the file does not justify (an absurd header length or
 * shape is refused before anything is allocated).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { openCheckpoint, openSafetensors, writeSafetensors } from "../../src/io/safetensors.ts";

const ENC = new TextEncoder();

/** A file with the given header JSON, header-length field and data size. */
function file(header: unknown, dataBytes: number, headerLength?: bigint): Uint8Array {
  const h = ENC.encode(JSON.stringify(header));
  const out = new Uint8Array(8 + h.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, headerLength ?? BigInt(h.length), true);
  out.set(h, 8);
  return out;
}

/** Opens `bytes` as `<dir>/<name>.safetensors` and reads every tensor; returns the error, if any. */
async function attempt(dir: string, name: string, bytes: Uint8Array): Promise<Error | null> {
  const path = `${dir}/${name}.safetensors`;
  await Deno.writeFile(path, bytes);
  try {
    using f = await openSafetensors(path);
    for (const n of f.tensors.keys()) await f.read(n);
    return null;
  } catch (e) {
    return e as Error;
  }
}

function assertNamed(err: Error | null, name: string, why: string): void {
  assert.ok(err, `${why}: opened without an error`);
  assert.ok(
    err instanceof TypeError || err instanceof RangeError || err instanceof SyntaxError,
    `${why}: ${err.constructor.name}: ${err.message}`,
  );
  assert.ok(
    err.message.includes(`${name}.safetensors`),
    `${why}: no file name in "${err.message}"`,
  );
}

Deno.test("malformed safetensors headers are refused with typed errors naming the file", async () => {
  const dir = await Deno.makeTempDir();
  const f32 = (offsets: [number, number], shape: number[] = [2]) => ({
    dtype: "F32",
    shape,
    data_offsets: offsets,
  });
  const cases: [string, Uint8Array][] = [
    ["absurd_header_length", file({}, 0, 2n ** 53n)], // must not allocate 8 PB
    ["header_past_end", file({}, 0, 4096n)],
    [
      "not_json",
      (() => {
        const b = file({ a: f32([0, 8]) }, 8);
        b[9] = 0xff; // not UTF-8 / not JSON
        return b;
      })(),
    ],
    ["not_an_object", file([1, 2, 3], 0)],
    ["overlapping", file({ a: f32([0, 8]), b: f32([4, 12]) }, 12)],
    ["reversed_offsets", file({ a: f32([8, 0]) }, 8)],
    ["negative_offset", file({ a: f32([-8, 0]) }, 8)],
    ["past_the_end", file({ a: f32([0, 8]) }, 4)],
    ["size_mismatch", file({ a: f32([0, 8], [3]) }, 8)],
    ["negative_dim", file({ a: f32([0, 8], [-2]) }, 8)],
    ["fractional_dim", file({ a: f32([0, 8], [1.5]) }, 8)],
    ["absurd_shape", file({ a: f32([0, 8], [2 ** 40, 2 ** 20]) }, 8)],
    ["unknown_dtype", file({ a: { dtype: "Q4_K", shape: [2], data_offsets: [0, 8] } }, 8)],
    ["truncated_length", new Uint8Array([1, 2, 3])],
  ];
  for (const [name, bytes] of cases) assertNamed(await attempt(dir, name, bytes), name, name);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("truncated and byte-mutated safetensors files never escape as untyped errors", async () => {
  const dir = await Deno.makeTempDir();
  const good = `${dir}/good.safetensors`;
  await writeSafetensors(good, {
    a: { dtype: "F32", shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
    b: { dtype: "BF16", shape: [4], data: [1, 2, 3, 4] },
    c: { dtype: "F16", shape: [3], data: [1, 2, 3] },
  });
  const bytes = await Deno.readFile(good);
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.record({ cut: fc.integer({ min: 0, max: bytes.length - 1 }) }),
        fc.record({
          edits: fc.array(
            fc.tuple(
              fc.integer({ min: 0, max: bytes.length - 1 }),
              fc.integer({ min: 0, max: 255 }),
            ),
            { minLength: 1, maxLength: 4 },
          ),
        }),
      ),
      async (m) => {
        let b: Uint8Array;
        if ("cut" in m) b = bytes.slice(0, m.cut);
        else {
          b = bytes.slice();
          for (const [i, v] of m.edits) b[i] = v;
        }
        const name = `mutant${n++}`;
        const err = await attempt(dir, name, b);
        // a mutation inside tensor data is a valid file; anything else must be refused properly
        if (err) assertNamed(err, name, JSON.stringify(m));
        if ("cut" in m) assertNamed(err, name, `cut at ${m.cut}`);
      },
    ),
    { numRuns: 150, seed: 11 },
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("a sharded index that escapes its folder or names a missing shard is refused", async () => {
  const dir = await Deno.makeTempDir();
  const index = `${dir}/model.safetensors.index.json`;
  for (
    const [map, pattern] of [
      [{ a: "../outside.safetensors" }, /unsafe path/],
      [{ a: "/etc/passwd" }, /unsafe path/],
      [{ a: "missing.safetensors" }, /missing\.safetensors/],
    ] as const
  ) {
    await Deno.writeTextFile(index, JSON.stringify({ weight_map: map }));
    await assert.rejects(
      async () => {
        using _c = await openCheckpoint(dir);
      },
      (e: Error) => e.message.includes("model.safetensors.index.json") && pattern.test(e.message),
    );
  }
  await Deno.writeTextFile(index, "{ not json");
  await assert.rejects(
    async () => {
      using _c = await openCheckpoint(dir);
    },
    (e: Error) => e instanceof SyntaxError && e.message.includes("model.safetensors.index.json"),
  );
  await Deno.remove(dir, { recursive: true });
});
