import assert from "node:assert/strict";
import fc from "fast-check";
import { openCheckpoint } from "../../src/io/checkpoint.ts";
import { decodeSafetensors, dtypeBytes } from "../../src/io/safetensors_codec.ts";
import { openSafetensors } from "../../src/io/safetensors_reader.ts";
import {
  encodeSafetensors,
  type TensorInput,
  writeSafetensors,
} from "../../src/io/safetensors_writer.ts";
import {
  assertSameValues,
  CONFORMANCE,
  rawFile,
  refDecode,
  runs,
  tensorArb,
  withTmp,
} from "./_safetensors_util.ts";

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
