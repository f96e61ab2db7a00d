/**
 * The storage's plain append (`appendMarks`, `appendSlots`; kernels `append_marks`,
 * `append_slots` of shaders/paged_kv.wgsl) against its CPU twin, over random batch, heads,
 * chunk sizes, left padding and starting lengths, in prefill and decode. Exact (integers). The
 * dense policy built on it runs through the policy suite (test/policies/policy_suite_test.ts)
 * against the dense oracle.
 */

import fc from "fast-check";
import assert from "node:assert/strict";
import { appendMarks, appendSlots } from "../../src/cache/paged_kv.ts";
import { PagedKvStorage } from "../../src/cache/paged_storage.ts";
import { fcParams, gpu, GPU_TEST } from "../_util.ts";

/** What the plain append leaves: chunk marks, slots and the new lengths. */
interface AppendResult {
  marks: Int32Array;
  dest: Int32Array;
  lens: Int32Array;
}

/**
 * CPU twin of `append_marks` + `append_slots` on one layer: entry j of page p (row
 * b = p / Hkv) is padding iff j < f (f = firstReal[b], 0 in decode): mark 2, slot −1; else
 * mark 0, slot len + j − f. The page's length grows by its real tokens.
 */
function appendReference(
  lens: Int32Array,
  firstReal: Int32Array,
  kvHeads: number,
  n: number,
  decode: boolean,
): AppendResult {
  const pages = lens.length;
  const marks = new Int32Array(pages * n);
  const dest = new Int32Array(pages * n);
  const out = lens.slice();
  for (let p = 0; p < pages; p++) {
    const f = decode ? 0 : Math.min(firstReal[Math.floor(p / kvHeads)], n);
    for (let j = 0; j < n; j++) {
      marks[p * n + j] = j < f ? 2 : 0;
      dest[p * n + j] = j < f ? -1 : lens[p] + j - f;
    }
    out[p] += n - f;
  }
  return { marks, dest, lens: out };
}

const arbAppend = fc.record({
  B: fc.integer({ min: 1, max: 3 }),
  Hkv: fc.integer({ min: 1, max: 3 }),
  layers: fc.integer({ min: 1, max: 2 }),
  n: fc.integer({ min: 1, max: 300 }),
  decode: fc.boolean(),
  seed: fc.integer({ min: 0, max: 1 << 20 }),
});

Deno.test({
  name:
    "appendMarks() and appendSlots() equal their CPU twin over padding, chunk sizes and lengths, in prefill and decode",
  ...GPU_TEST,
  fn: async () => {
    await fc.assert(
      fc.asyncProperty(arbAppend, async (c) => {
        const n = c.decode ? 1 : c.n;
        using s = new PagedKvStorage(gpu, {
          layers: c.layers,
          batch: c.B,
          kvHeads: c.Hkv,
          headDim: 4,
          blockSize: 4,
          preallocateTokens: 1,
        });
        const pages = s.pages, layer = c.layers - 1;
        let x = c.seed;
        const rnd = (m: number) => (x = (x * 1103515245 + 12345) % 2147483648) % m;
        // Starting lengths of every layer; firstReal in 0..n (n: a row that is all padding).
        const lens0 = Int32Array.from({ length: c.layers * pages }, () => rnd(50));
        const fr = Int32Array.from({ length: c.B }, () => (rnd(4) === 0 ? n : rnd(n + 1)));
        gpu.write(s.lens, lens0);
        const frBuf = gpu.alloc(c.B * 4, "test first real");
        const marks = gpu.alloc(pages * n * 4, "test marks");
        const dest = gpu.alloc(pages * n * 4, "test dest");
        gpu.write(frBuf, fr);
        gpu.encoder().clearBuffer(marks);
        if (!c.decode) appendMarks(s, n, frBuf, marks);
        appendSlots(s, layer, n, frBuf, dest, c.decode);
        const [m, d, l] = await gpu.readMany([
          { buffer: marks, size: pages * n * 4 },
          { buffer: dest, size: pages * n * 4 },
          { buffer: s.lens, size: c.layers * pages * 4 },
        ]);
        for (const b of [frBuf, marks, dest]) gpu.release(b);
        const at = layer * pages;
        const want = appendReference(lens0.slice(at, at + pages), fr, c.Hkv, n, c.decode);
        const label = JSON.stringify({ ...c, fr: [...fr] });
        assert.deepEqual([...new Int32Array(m)], [...want.marks], `marks ${label}`);
        assert.deepEqual([...new Int32Array(d)], [...want.dest], `dest ${label}`);
        const lens = new Int32Array(l);
        assert.deepEqual([...lens.slice(at, at + pages)], [...want.lens], `lens ${label}`);
        assert.deepEqual([...lens.slice(0, at)], [...lens0.slice(0, at)], `other layers ${label}`);
      }),
      fcParams(20),
    );
  },
});
