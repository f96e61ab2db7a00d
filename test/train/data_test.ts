import assert from "node:assert/strict";
import fc from "fast-check";
import {
  type BatchSource,
  generatorSource,
  packDocuments,
  sequenceSource,
  textFileSource,
} from "../../src/train/data.ts";
import { fcParams } from "../_util.ts";

/** A byte-level stand-in tokenizer: char codes, EOS 0. */
const charTok = {
  encode: (t: string) => [...t].map((c) => c.charCodeAt(0)),
  eosTokenIds: [0],
};

function drain(src: BatchSource, n: number): number[][] {
  return Array.from({ length: n }, () => [...src.next().ids]);
}

Deno.test("packDocuments() fills sequences exactly, EOS between documents, overflow dropped", () => {
  const seqs = packDocuments([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], { seqLen: 4, eosId: 0 });
  assert.deepEqual(seqs.map((s) => [...s]), [[1, 2, 3, 0], [4, 5, 0, 6]]);
  // without EOS, a long document is cut and its overflow dropped; the next starts fresh
  const noEos = packDocuments([[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]], { seqLen: 4 });
  assert.deepEqual(noEos.map((s) => [...s]), [[1, 2, 3, 4], [7, 8, 9, 10]]);
  assert.deepEqual(packDocuments([[], [1]], { seqLen: 1 }).map((s) => [...s]), [[1]]);
  assert.throws(() => packDocuments([], { seqLen: 0 }), /seqLen must be an integer >= 1/);
});

Deno.test("packDocuments() equals slicing the document stream at document starts", () => {
  fc.assert(
    fc.property(
      fc.array(fc.array(fc.integer({ min: 1, max: 99 }), { maxLength: 12 }), { maxLength: 20 }),
      fc.integer({ min: 1, max: 9 }),
      fc.boolean(),
      (docs, S, eos) => {
        // the stream of (document, EOS?) and where each document starts in it
        const stream: number[] = [], starts: number[] = [];
        for (const d of docs) {
          const part = eos ? [...d, 0] : d;
          if (part.length) starts.push(stream.length);
          stream.push(...part);
        }
        // a sequence is S tokens from a document start; the next one begins at the first
        // document start at or after its end
        const want: number[][] = [];
        for (let k = 0; k < starts.length;) {
          const at = starts[k];
          if (at + S > stream.length) break;
          want.push(stream.slice(at, at + S));
          while (k < starts.length && starts[k] < at + S) k++;
        }
        const got = packDocuments(docs, { seqLen: S, eosId: eos ? 0 : undefined });
        assert.deepEqual(got.map((s) => [...s]), want);
      },
    ),
    fcParams(200),
  );
});

Deno.test("sequenceSource() is deterministic by seed, covers each epoch once, and resumes", () => {
  const seqs = Array.from({ length: 7 }, (_, i) => [i, i, i]);
  const a = drain(sequenceSource(seqs, { batch: 1, seed: 42 }), 14);
  const b = drain(sequenceSource(seqs, { batch: 1, seed: 42 }), 14);
  const c = drain(sequenceSource(seqs, { batch: 1, seed: 43 }), 14);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const epoch0 = a.slice(0, 7).map((r) => r[0]).sort(), epoch1 = a.slice(7).map((r) => r[0]);
  assert.deepEqual(epoch0, [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual([...epoch1].sort(), [0, 1, 2, 3, 4, 5, 6]);
  assert.notDeepEqual(a.slice(0, 7).map((r) => r[0]), epoch1, "each epoch has its own order");
  // batches of 3 cross the epoch boundary; resume from any point equals the uninterrupted stream
  const full = drain(sequenceSource(seqs, { batch: 3, seed: 5 }), 6);
  for (let k = 0; k <= 6; k++) {
    const src = sequenceSource(seqs, { batch: 3, seed: 5 });
    drain(src, k);
    const saved = JSON.parse(JSON.stringify(src.state()));
    const again = sequenceSource(seqs, { batch: 3, seed: 5 });
    again.restore(saved);
    assert.deepEqual(drain(again, 6 - k), full.slice(k), `resume after ${k} batches`);
  }
  const other = sequenceSource(seqs, { batch: 3, seed: 6 });
  assert.throws(
    () => other.restore(sequenceSource(seqs, { batch: 3, seed: 5 }).state()),
    TypeError,
  );
  assert.throws(() => sequenceSource([[1, 2], [3]], { batch: 1, seed: 0, label: "x.txt" }), {
    name: "RangeError",
    message: "x.txt: sequence 1 has 1 tokens, sequence 0 has 2",
  });
});

Deno.test("generatorSource() draws sequence i from (seed, i) and resumes by counter", () => {
  const gen = (i: number, rng: () => number) =>
    Array.from({ length: 5 }, () => Math.floor(rng() * 1000) + i);
  const src = generatorSource(gen, { batch: 2, seqLen: 5, seed: 7 });
  const full = drain(src, 4);
  assert.deepEqual(drain(generatorSource(gen, { batch: 2, seqLen: 5, seed: 7 }), 4), full);
  assert.notDeepEqual(drain(generatorSource(gen, { batch: 2, seqLen: 5, seed: 8 }), 4), full);
  const r = generatorSource(gen, { batch: 2, seqLen: 5, seed: 7 });
  drain(r, 1);
  const s2 = generatorSource(gen, { batch: 2, seqLen: 5, seed: 7 });
  s2.restore(r.state());
  assert.deepEqual(drain(s2, 3), full.slice(1));
  const bad = generatorSource(() => [1, 2], { batch: 1, seqLen: 5, seed: 0 });
  assert.throws(() => bad.next(), /sequence 0 has 2 tokens, expected seqLen 5/);
});

Deno.test("textFileSource() packs a file's shuffled documents with EOS; errors name the file", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dms_data_" });
  try {
    const path = `${dir}/corpus.txt`;
    const docs = Array.from({ length: 12 }, (_, i) => `doc ${String.fromCharCode(65 + i)} text`);
    await Deno.writeTextFile(path, docs.join("\n\n") + "\n");
    const src = await textFileSource(path, charTok, { batch: 2, seqLen: 16, seed: 42 });
    assert.equal(src.seqLen, 16);
    assert.deepEqual(src.eosTokenIds, [0]);
    const rows = drain(src, 3).flatMap((ids) => [ids.slice(0, 16), ids.slice(16)]);
    for (const r of rows) {
      const text = String.fromCharCode(...r.map((c) => c || 0x7c));
      // each row starts with a whole document, followed by EOS (shown as |)
      assert.match(text, /^doc [A-L] text\|doc [A-L]/);
    }
    // deterministic by seed; another seed gives another document order
    const again = drain(await textFileSource(path, charTok, { batch: 2, seqLen: 16, seed: 42 }), 3);
    assert.deepEqual(again.flatMap((ids) => [ids.slice(0, 16), ids.slice(16)]), rows);
    const other = drain(await textFileSource(path, charTok, { batch: 2, seqLen: 16, seed: 1 }), 3);
    assert.notDeepEqual(other.flatMap((ids) => [ids.slice(0, 16), ids.slice(16)]), rows);
    // lines and jsonl
    await Deno.writeTextFile(`${dir}/c.jsonl`, '{"text":"abcdef"}\n\n{"text":"ghij"}\n');
    const j = await textFileSource(`${dir}/c.jsonl`, charTok, {
      batch: 1,
      seqLen: 4,
      seed: 0,
      documents: "jsonl",
    });
    const got = drain(j, 2).map((r) => String.fromCharCode(...r)).sort();
    assert.deepEqual(got, ["abcd", "ghij"]);
    await Deno.writeTextFile(`${dir}/bad.jsonl`, '{"text":"a"}\n{"txt":1}\n');
    await assert.rejects(
      textFileSource(`${dir}/bad.jsonl`, charTok, {
        batch: 1,
        seqLen: 1,
        seed: 0,
        documents: "jsonl",
      }),
      { message: `${dir}/bad.jsonl:2: expected an object with a string "text" field` },
    );
    await assert.rejects(
      textFileSource(path, charTok, { batch: 1, seqLen: 10_000, seed: 0 }),
      {
        name: "RangeError",
        message: `${path}: 12 documents give fewer than seqLen = 10000 tokens`,
      },
    );
    await assert.rejects(
      textFileSource(`${dir}/missing.txt`, charTok, { batch: 1, seqLen: 4, seed: 0 }),
      (e: Error) => e.message.startsWith(`${dir}/missing.txt: cannot read the training text`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
