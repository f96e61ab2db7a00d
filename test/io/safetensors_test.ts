import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeSafetensors,
  dtypeBytes,
  encodeSafetensors,
  f32ToBf16Bits,
  openCheckpoint,
  openSafetensors,
  SAFETENSORS_DTYPES,
  type SafetensorsDtype,
  type TensorInput,
  writeSafetensors,
} from "../../src/io/safetensors.ts";

const CONFORMANCE = new URL("../../../shared/conformance/", import.meta.url).pathname;
const RUNS = Number(Deno.env.get("FC_RUNS")) || 0;
const runs = (n: number) => ({ numRuns: RUNS > 0 ? RUNS : n });

/** Runs `fn` with a fresh temp dir, removed afterwards. */
async function withTmp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "dms_st_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Independent scalar decoder of stored bytes (DataView, no typed-array tricks). */
function refDecode(dtype: SafetensorsDtype, bytes: Uint8Array): number[] {
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
function assertSameValues(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i])) {
      assert.fail(`${what}: index ${i}: got ${actual[i]}, expected ${expected[i]}`);
    }
  }
}

/** Random stored bytes that are valid for the dtype (I64 within int32, BOOL 0/1). */
function bytesArb(dtype: SafetensorsDtype, n: number): fc.Arbitrary<Uint8Array> {
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

const tensorArb: fc.Arbitrary<{ dtype: SafetensorsDtype; shape: number[]; bytes: Uint8Array }> = fc
  .record({
    dtype: fc.constantFrom(...SAFETENSORS_DTYPES),
    shape: fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 3 }),
  }).chain(({ dtype, shape }) =>
    bytesArb(dtype, shape.reduce((a, b) => a * b, 1)).map((bytes) => ({ dtype, shape, bytes }))
  );

Deno.test("writeSafetensors then openSafetensors round-trips stored bytes of every dtype bit-exactly", async () => {
  await withTmp(async (dir) => {
    await fc.assert(
      fc.asyncProperty(
        fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9_.]{0,12}$/), tensorArb, {
          minKeys: 1,
          maxKeys: 4,
        }),
        fc.integer({ min: 8, max: 40 }),
        async (tensors, chunkBytes) => {
          const path = `${dir}/t.safetensors`;
          await writeSafetensors(path, tensors, { format: "pt" });
          using file = await openSafetensors(path, { chunkBytes });
          assert.deepEqual([...file.tensors.keys()], Object.keys(tensors));
          assert.deepEqual(file.metadata, { format: "pt" });
          for (const [name, t] of Object.entries(tensors)) {
            const info = file.tensors.get(name)!;
            assert.equal(info.dtype, t.dtype);
            assert.deepEqual(info.shape, t.shape);
            const raw = await file.readRaw(name);
            assert.deepEqual(raw.bytes, t.bytes, `${name}: raw bytes`);
            const conv = await file.read(name);
            assertSameValues(conv.data, refDecode(t.dtype, t.bytes), `${name} (${t.dtype})`);
          }
          // The in-memory encoder writes the same file.
          assert.deepEqual(encodeSafetensors(tensors, { format: "pt" }), await Deno.readFile(path));
        },
      ),
      runs(60),
    );
  });
});

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

Deno.test("read() returns row ranges and rejects ranges outside the tensor", async () => {
  await withTmp(async (dir) => {
    const path = `${dir}/rows.safetensors`;
    const data = Array.from({ length: 21 }, (_, i) => i - 10);
    await writeSafetensors(path, {
      m: { dtype: "F32", shape: [7, 3], data },
      v: { dtype: "I64", shape: [5], data: [-2, -1, 0, 1, 2] },
      s: { dtype: "BF16", shape: [], data: [0.5] },
      e: { dtype: "F16", shape: [0, 4], data: [] },
    });
    using file = await openSafetensors(path);
    const r = await file.read("m", { rowStart: 2, rowEnd: 5 });
    assert.deepEqual(r.shape, [3, 3]);
    assert.deepEqual(Array.from(r.data), data.slice(6, 15));
    assert.deepEqual(Array.from((await file.read("m", { rowStart: 6 })).data), data.slice(18));
    assert.deepEqual((await file.read("m", { rowStart: 4, rowEnd: 4 })).shape, [0, 3]);
    assert.deepEqual(Array.from((await file.read("v", { rowStart: 1, rowEnd: 3 })).data), [-1, 0]);
    const raw = await file.readRaw("m", { rowStart: 1, rowEnd: 2 });
    assert.deepEqual(Array.from(new Float32Array(raw.bytes.buffer)), data.slice(3, 6));
    const s = await file.read("s");
    assert.deepEqual([s.shape, Array.from(s.data)], [[], [0.5]]);
    const e = await file.read("e");
    assert.deepEqual([e.shape, e.data.length], [[0, 4], 0]);
    await assert.rejects(
      file.read("m", { rowStart: 5, rowEnd: 8 }),
      (err: Error) =>
        err instanceof RangeError && err.message.includes(path) &&
        err.message.includes('tensor "m"') && err.message.includes("[5, 8)"),
    );
    await assert.rejects(file.read("m", { rowStart: 3, rowEnd: 2 }), RangeError);
    await assert.rejects(
      file.read("nope"),
      (err: Error) => err.message.includes('"nope"') && err.message.includes(path),
    );
  });
});

Deno.test("read() in chunks smaller than the tensor matches a whole read, for every dtype", async () => {
  await withTmp(async (dir) => {
    await fc.assert(
      fc.asyncProperty(
        tensorArb.filter((t) => t.shape.length > 0 && t.bytes.length > 24),
        fc.integer({ min: 8, max: 24 }),
        fc.nat(),
        fc.nat(),
        async (t, chunkBytes, a, b) => {
          const path = `${dir}/c.safetensors`;
          await writeSafetensors(path, { pad: { dtype: "U8", shape: [3], data: [1, 2, 3] }, t });
          using small = await openSafetensors(path, { chunkBytes });
          const whole = decodeSafetensors(await Deno.readFile(path)).tensors.t.data;
          const rows = t.shape[0], per = whole.length / rows;
          const [lo, hi] = [a % (rows + 1), b % (rows + 1)].sort((x, y) => x - y);
          const got = await small.read("t", { rowStart: lo, rowEnd: hi });
          assertSameValues(
            got.data,
            whole.slice(lo * per, hi * per),
            `${t.dtype} rows ${lo}..${hi}`,
          );
          const raw = await small.readRaw("t", { rowStart: lo, rowEnd: hi });
          const w = dtypeBytes(t.dtype) * per;
          assert.deepEqual(raw.bytes, t.bytes.slice(lo * w, hi * w));
        },
      ),
      runs(60),
    );
  });
});

Deno.test("concurrent reads of one file return the right tensors", async () => {
  await withTmp(async (dir) => {
    const path = `${dir}/many.safetensors`;
    const tensors: Record<string, TensorInput> = {};
    for (let i = 0; i < 8; i++) {
      tensors[`t${i}`] = { dtype: "F32", shape: [50], data: Array.from({ length: 50 }, () => i) };
    }
    await writeSafetensors(path, tensors);
    using file = await openSafetensors(path, { chunkBytes: 16 });
    const all = await Promise.all(Object.keys(tensors).map((n) => file.read(n)));
    all.forEach((t, i) => assert.ok(t.data.every((x) => x === i), `t${i}`));
  });
});

Deno.test("openCheckpoint reads sharded checkpoints through the index and names missing shards and tensors", async () => {
  await withTmp(async (dir) => {
    await writeSafetensors(`${dir}/model-00001-of-00002.safetensors`, {
      "a.weight": { dtype: "BF16", shape: [2, 2], data: [1, 2, 3, 4] },
      "b.weight": { dtype: "F32", shape: [3], data: [5, 6, 7] },
    });
    await writeSafetensors(`${dir}/model-00002-of-00002.safetensors`, {
      "c.weight": { dtype: "I32", shape: [2], data: [-8, 9] },
    });
    const index = {
      metadata: { total_size: 24 },
      weight_map: {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00001-of-00002.safetensors",
        "c.weight": "model-00002-of-00002.safetensors",
      },
    };
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify(index));
    {
      using ckpt = await openCheckpoint(dir);
      assert.deepEqual([...ckpt.tensors.keys()], ["a.weight", "b.weight", "c.weight"]);
      assert.equal(ckpt.files.length, 2);
      assert.ok(ckpt.tensors.get("c.weight")!.file.endsWith("model-00002-of-00002.safetensors"));
      assert.deepEqual(Array.from((await ckpt.read("a.weight", { rowStart: 1 })).data), [3, 4]);
      assert.deepEqual(Array.from((await ckpt.read("c.weight")).data), [-8, 9]);
      assert.deepEqual(Array.from((await ckpt.read("b.weight")).data), [5, 6, 7]);
      await assert.rejects(ckpt.read("d.weight"), /Tensor "d.weight" not found in checkpoint/);
    }
    const bad = (m: Record<string, string>) =>
      Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify({ weight_map: m }));
    await bad({ ...index.weight_map, "d.weight": "model-00003-of-00003.safetensors" });
    await assert.rejects(
      openCheckpoint(dir),
      (e: Error) =>
        e.message.includes("model.safetensors.index.json") &&
        e.message.includes("model-00003-of-00003.safetensors") && e.message.includes('"d.weight"'),
    );
    await bad({ ...index.weight_map, "e.weight": "model-00002-of-00002.safetensors" });
    await assert.rejects(
      openCheckpoint(dir),
      /tensor "e.weight" is mapped to .*model-00002-of-00002.safetensors, which does not contain it/,
    );
    await bad({ "a.weight": "../escape.safetensors" });
    await assert.rejects(openCheckpoint(dir), SyntaxError);
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, "{ nope");
    await assert.rejects(openCheckpoint(dir), /model.safetensors.index.json/);
    const empty = await Deno.makeTempDir({ dir });
    await assert.rejects(openCheckpoint(empty), /No weights in .*model.safetensors/);
  });
});

/** A file from a raw header (object or text) and a data section. */
function rawFile(header: unknown, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(
    typeof header === "string" ? header : JSON.stringify(header),
  );
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

Deno.test("openSafetensors rejects malformed files, naming the file and the tensor", async () => {
  await withTmp(async (dir) => {
    const good = encodeSafetensors({
      first: { dtype: "F32", shape: [2], data: [1, 2] },
      weight: { dtype: "F32", shape: [2, 2], data: [1, 2, 3, 4] },
    });
    const cases: [string, Uint8Array, new (...a: never[]) => Error, RegExp][] = [
      ["truncated", good.slice(0, good.length - 4), SyntaxError, /tensor "weight".*truncated/],
      ["tiny", new Uint8Array(5), SyntaxError, /too short/],
      [
        "pastEof",
        rawFile({}, new Uint8Array(0), 10_000n),
        SyntaxError,
        /header length 10000 runs past the end of the file/,
      ],
      ["huge", rawFile({}, new Uint8Array(0), 2n ** 40n), RangeError, /exceeds the limit/],
      [
        "overlap",
        rawFile({
          a: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          b: { dtype: "F32", shape: [2], data_offsets: [4, 12] },
        }, new Uint8Array(12)),
        SyntaxError,
        /tensors "a" \[0, 8\] and "b" \[4, 12\] overlap/,
      ],
      [
        "dtype",
        rawFile({ x: { dtype: "F64", shape: [1], data_offsets: [0, 8] } }, new Uint8Array(8)),
        TypeError,
        /tensor "x" has unsupported dtype "F64"/,
      ],
      [
        "size",
        rawFile({ x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
        SyntaxError,
        /tensor "x": shape \[3\] of F32 needs 12 bytes, but data_offsets \[0, 8\] span 8/,
      ],
      ["json", rawFile("{not json", new Uint8Array(0)), SyntaxError, /not valid UTF-8 JSON/],
      ["array", rawFile("[1, 2]", new Uint8Array(0)), SyntaxError, /must be a JSON object/],
      [
        "shape",
        rawFile({ x: { dtype: "F32", shape: [-1], data_offsets: [0, 0] } }, new Uint8Array(0)),
        SyntaxError,
        /tensor "x": field "shape.0"/,
      ],
      [
        "offsets",
        rawFile({ x: { dtype: "U8", shape: [2], data_offsets: [0] } }, new Uint8Array(2)),
        SyntaxError,
        /tensor "x": field "data_offsets/,
      ],
      [
        "metadata",
        rawFile({ __metadata__: { n: 1 } }, new Uint8Array(0)),
        SyntaxError,
        /__metadata__: field "n"/,
      ],
    ];
    for (const [name, bytes, cls, re] of cases) {
      const path = `${dir}/${name}.safetensors`;
      await Deno.writeFile(path, bytes);
      await assert.rejects(
        openSafetensors(path),
        (e: Error) => {
          assert.ok(e instanceof cls, `${name}: expected ${cls.name}, got ${e.name}: ${e.message}`);
          assert.match(e.message, re, name);
          assert.ok(e.message.includes(path), `${name}: message names the file: ${e.message}`);
          return true;
        },
      );
    }
    // __metadata__ with strings and a tensor-less file are fine.
    await Deno.writeFile(
      `${dir}/empty.safetensors`,
      rawFile({ __metadata__: { a: "b" } }, new Uint8Array(0)),
    );
    using empty = await openSafetensors(`${dir}/empty.safetensors`);
    assert.equal(empty.tensors.size, 0);
    assert.deepEqual(empty.metadata, { a: "b" });
  });
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

Deno.test("writeSafetensors rejects bad inputs, naming the tensor", async () => {
  const cases: [Record<string, TensorInput>, new (...a: never[]) => Error, RegExp][] = [
    [
      { a: { dtype: "F32", shape: [3], data: [1, 2] } },
      RangeError,
      /"a": shape \[3\] has 3 elements, data has 2/,
    ],
    [
      { a: { dtype: "I32", shape: [1], data: [1.5] } },
      RangeError,
      /"a": element 0 = 1.5 is not a valid I32/,
    ],
    [{ a: { dtype: "U8", shape: [1], data: [256] } }, RangeError, /"a": element 0 = 256/],
    [{ a: { dtype: "BOOL", shape: [1], data: [2] } }, RangeError, /not a valid BOOL/],
    [
      { a: { dtype: "F16", shape: [2], bytes: new Uint8Array(3) } },
      RangeError,
      /needs 4 bytes, got 3/,
    ],
    [
      { a: { dtype: "F64" as SafetensorsDtype, shape: [1], data: [1] } },
      TypeError,
      /unsupported dtype "F64"/,
    ],
    [{ a: { dtype: "F32", shape: [-1], data: [] } }, RangeError, /invalid shape/],
    [
      { __metadata__: { dtype: "F32", shape: [], data: [1] } },
      TypeError,
      /not a valid tensor name/,
    ],
  ];
  await withTmp(async (dir) => {
    for (const [tensors, cls, re] of cases) {
      assert.throws(
        () => encodeSafetensors(tensors),
        (e: Error) => e instanceof cls && re.test(e.message),
      );
      await assert.rejects(writeSafetensors(`${dir}/x.safetensors`, tensors), cls);
    }
    // Nothing (not even a temp file) is left behind.
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("the B1 conformance files read correctly (names, shapes, dtypes, sample values)", async () => {
  const dir = `${CONFORMANCE}B1_infer_qneuron_head/`;
  const caseJson = JSON.parse(await Deno.readTextFile(dir + "case.json"));
  using file = await openSafetensors(dir + "case.safetensors");
  const listed = caseJson.tensors as Record<string, { dtype: string; shape: number[] }>;
  assert.deepEqual([...file.tensors.keys()].sort(), Object.keys(listed).sort());
  for (const [name, t] of Object.entries(listed)) {
    const info = file.tensors.get(name)!;
    assert.equal(info.dtype, t.dtype === "float32" ? "F32" : "I32", name);
    assert.deepEqual(info.shape, t.shape, name);
  }
  const T = caseJson.total_len, P = caseJson.prompt_len;
  const ids = await file.read("input_ids");
  assert.ok(ids.data instanceof Int32Array && ids.data.every((x) => x >= 0 && x < 256));
  // decisions = (decision_logits > 0), README "Inference".
  const logits = (await file.read("decision_logits")).data,
    dec = (await file.read("decisions")).data;
  assert.ok(dec.every((d, i) => d === (logits[i] > 0 ? 1 : 0)));
  // cache_len: -1 before P-1, then the retained count; last row = stats.final_cache_len.
  const cacheLen = (await file.read("cache_len")).data;
  assert.ok(cacheLen.slice(0, (P - 1) * 4).every((x) => x === -1));
  assert.deepEqual(Array.from(cacheLen.slice((T - 1) * 4)), caseJson.stats.final_cache_len.flat());
  const lastMask = await file.read("retained_mask", { rowStart: T - 1 });
  assert.deepEqual(lastMask.shape, [1, 2, 2, T]);
  const sums = [0, 1, 2, 3].map((p) =>
    Array.from(lastMask.data.slice(p * T, (p + 1) * T)).reduce((a, b) => a + b)
  );
  assert.deepEqual(sums, caseJson.stats.final_cache_len.flat());
  const cr = (await file.read("cr_cache")).data;
  assert.ok(Math.abs(cr[T - 1] - caseJson.stats.final_cr_cache) < 1e-6);
  // q is zeroed at [l, h*g, :, D-1] (query-neuron variant).
  const q = (await file.read("q")).data, D = 16;
  for (let t = 0; t < T; t++) assert.equal(q[(0 * 4 + 2) * T * D + t * D + D - 1], 0);

  using w = await openCheckpoint(dir + "weights.safetensors");
  const shapes: Record<string, number[]> = {
    "model.embed_tokens.weight": [256, 64],
    "model.layers.1.self_attn.k_proj.weight": [32, 64],
    "model.layers.0.self_attn.q_norm.weight": [16],
    "model.layers.0.mlp.down_proj.weight": [64, 128],
    "model.norm.weight": [64],
    "lm_head.weight": [256, 64],
  };
  for (const [name, shape] of Object.entries(shapes)) {
    assert.deepEqual(w.tensors.get(name)?.shape, shape, name);
    assert.equal(w.tensors.get(name)?.dtype, "F32", name);
  }
  assert.equal(w.tensors.size, 2 * 11 + 3);
  const norm = (await w.read("model.norm.weight")).data; // 1 + 0.1 N(0,1)
  assert.ok(norm.every((x) => x > 0.5 && x < 1.5));
  const emb = (await w.read("model.embed_tokens.weight", { rowStart: 10, rowEnd: 12 })).data;
  const std = Math.sqrt(Array.from(emb).reduce((a, x) => a + x * x, 0) / emb.length); // std 1
  assert.ok(std > 0.7 && std < 1.3, `embedding std ${std}`);
});
