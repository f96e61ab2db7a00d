/**
 * Hostile conformance cases, training text files and retrofit checkpoints (issue 13, item 1).
 * A mutated case fails as a case (never a crash or a hang of the runner) with a message naming
 * a file of the case, unless it ran and its numbers disagree; a bad training file or checkpoint
 * ends in an error naming the file and the field or tensor.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { runConformance } from "../../src/eval/conformance.ts";
import { textFileSource } from "../../src/train/data.ts";
import { sequenceSource } from "../../src/train/data.ts";
import { parseConfig } from "../../src/model/config.ts";
import { createModel } from "../../src/model/model.ts";
import {
  latestCheckpoint,
  readOptimizerState,
  readTrainerState,
  restoreWeights,
  saveCheckpoint,
  type TrainerState,
} from "../../src/train/checkpoint.ts";
import { writeSafetensors } from "../../src/io/safetensors.ts";
import { gpu, GPU_TEST } from "../_util.ts";

const GOLDEN = new URL("../../testdata/conformance/", import.meta.url).pathname;

async function copyCase(name: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: `${name}-` });
  for await (const e of Deno.readDir(`${GOLDEN}${name}`)) {
    await Deno.copyFile(`${GOLDEN}${name}/${e.name}`, `${dir}/${e.name}`);
  }
  return dir;
}

/** Runs the case in `dir`: the runner must not throw, and a failure must say why. */
async function runMutant(dir: string, why: string): Promise<void> {
  const t0 = performance.now();
  const r = await runConformance(dir);
  const s = (performance.now() - t0) / 1000;
  assert.ok(s < 10, `${why}: ${s.toFixed(1)} s`);
  if (!r.cases.length) return assert.ok(!r.ok, `${why}: a run without a case passed`);
  assert.equal(r.cases.length, 1, why);
  const c = r.cases[0];
  if (c.ok || c.comparisons.length) return; // ran: passed, or its numbers disagree
  assert.ok(
    c.failures.some((f) => f.includes(`${dir}/`)),
    `${why}: no file named in ${JSON.stringify(c.failures)}`,
  );
}

Deno.test("conformance cases with mutated case.json fields fail as cases naming the file", async () => {
  for (const name of ["C2_attn_chunked_padded_b2", "B3_infer_adapter_head_chunked"]) {
    const dir = await copyCase(name);
    const original = await Deno.readTextFile(`${dir}/case.json`);
    const json = JSON.parse(original);
    const fields = Object.keys(json).filter((k) => k !== "description");
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...fields),
        fc.oneof(
          fc.jsonValue({ maxDepth: 1 }),
          fc.constantFrom(0, -1, 1e9, 2 ** 53, 0.5, null, [], [1e9]),
        ),
        async (field, value) => {
          await Deno.writeTextFile(`${dir}/case.json`, JSON.stringify({ ...json, [field]: value }));
          await runMutant(dir, `${name}: ${field} = ${JSON.stringify(value)}`);
        },
      ),
      { numRuns: 40, seed: 13 },
    );
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("conformance cases with truncated, mutated or missing files fail naming the file", async () => {
  const dir = await copyCase("B1_infer_qneuron_head");
  const files = ["case.json", "case.safetensors", "config.json", "weights.safetensors"];
  const originals = new Map<string, Uint8Array>();
  for (const f of files) originals.set(f, await Deno.readFile(`${dir}/${f}`));
  const restore = async () => {
    for (const [f, b] of originals) await Deno.writeFile(`${dir}/${f}`, b);
  };
  for (const f of files) {
    await Deno.remove(`${dir}/${f}`);
    await runMutant(dir, `without ${f}`);
    await restore();
  }
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(...files),
      fc.oneof(
        fc.record({ cut: fc.double({ min: 0, max: 0.999, noNaN: true }) }),
        // mutate a byte of the first 400 (the JSON or the safetensors header)
        fc.record({ at: fc.integer({ min: 0, max: 399 }), byte: fc.integer({ min: 0, max: 255 }) }),
      ),
      async (f, m) => {
        const b = originals.get(f)!.slice();
        const mutant = "cut" in m ? b.slice(0, Math.floor(m.cut * b.length)) : b;
        if ("at" in m) mutant[Math.min(m.at, b.length - 1)] = m.byte;
        await Deno.writeFile(`${dir}/${f}`, mutant);
        await runMutant(dir, `${f} ${JSON.stringify(m)}`);
        await Deno.writeFile(`${dir}/${f}`, originals.get(f)!);
      },
    ),
    { numRuns: 60, seed: 17 },
  );
  await Deno.remove(dir, { recursive: true });
});

/** A stand-in tokenizer: one id per UTF-16 code unit (the data module needs only `encode`). */
const CHARS = { encode: (t: string) => [...t].map((c) => c.charCodeAt(0) % 251), eosTokenIds: [0] };

Deno.test("training text files that are empty, not UTF-8 or shorter than one row are refused naming the file", async () => {
  const dir = await Deno.makeTempDir();
  const opts = { batch: 2, seqLen: 16, seed: 1 };
  const cases: [string, Uint8Array, RegExp][] = [
    ["empty.txt", new Uint8Array(0), /0 documents give fewer than seqLen = 16 tokens/],
    ["blank.txt", new TextEncoder().encode("\n\n  \n\n"), /fewer than seqLen/],
    ["short.txt", new TextEncoder().encode("hello\n\nworld\n"), /2 documents give fewer/],
    ["latin1.txt", new Uint8Array([0x68, 0x69, 0x20, 0xe9, 0x74, 0xe9]), /not UTF-8 .* offset 3/],
    [
      "binary.bin",
      new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0xff]),
      /not UTF-8 .* offset 8/,
    ],
    ["cut_utf8.txt", new TextEncoder().encode("abc€").slice(0, 5), /not UTF-8 .* offset 3/],
  ];
  for (const [name, bytes, pattern] of cases) {
    await Deno.writeFile(`${dir}/${name}`, bytes);
    await assert.rejects(
      () => textFileSource(`${dir}/${name}`, CHARS, opts),
      (e: Error) =>
        (e instanceof TypeError || e instanceof RangeError) &&
        e.message.startsWith(`${dir}/${name}: `) && pattern.test(e.message),
      name,
    );
  }
  await Deno.writeTextFile(
    `${dir}/bad.jsonl`,
    '{"text": "a long enough document here"}\n{"text": 3}\n',
  );
  await assert.rejects(
    () => textFileSource(`${dir}/bad.jsonl`, CHARS, { ...opts, documents: "jsonl" }),
    new RegExp(`^TypeError: ${dir}/bad.jsonl:2: expected an object with a string "text"`),
  );
  for (const missing of [`${dir}/nope.txt`, dir, "/dev/zero"]) {
    await assert.rejects(
      () => textFileSource(missing, CHARS, opts),
      new RegExp(`${missing}: cannot read`),
    );
  }
  // random bytes: a source, or a typed error naming the file
  let n = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.uint8Array({ maxLength: 200 }),
        fc.string({ unit: "grapheme", maxLength: 60 }).chain((t) =>
          fc.tuple(fc.nat(), fc.integer({ min: 0x80, max: 0xff })).map(([i, byte]) => {
            const b = new TextEncoder().encode(t);
            if (b.length) b[i % b.length] = byte; // one bad byte in otherwise valid text
            return b;
          })
        ),
      ),
      async (bytes) => {
        const path = `${dir}/random${n++}.txt`;
        await Deno.writeFile(path, bytes);
        try {
          const src = await textFileSource(path, CHARS, { batch: 1, seqLen: 4, seed: 2 });
          assert.equal(src.next().ids.length, 4);
        } catch (e) {
          assert.ok(e instanceof TypeError || e instanceof RangeError, String(e));
          assert.ok((e as Error).message.startsWith(`${path}: `), (e as Error).message);
          const off = /offset (\d+)/.exec((e as Error).message);
          if (off) {
            // oracle: everything before the offset is UTF-8, and no sequence starts there
            const at = Number(off[1]), fatal = new TextDecoder("utf-8", { fatal: true });
            assert.doesNotThrow(() => fatal.decode(bytes.subarray(0, at)));
            for (let len = 1; len <= 4; len++) {
              assert.throws(() => fatal.decode(bytes.subarray(at, at + len)), `offset ${at}`);
            }
          }
        }
      },
    ),
    { numRuns: 150, seed: 23 },
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("restoring a data source from a tampered state is refused, not served as garbage", () => {
  const src = sequenceSource([[1, 2], [3, 4], [5, 6]], { batch: 2, seed: 3, label: "train.txt" });
  const st = src.state();
  const tampered: Record<string, number | string>[] = [
    { pos: NaN },
    { pos: 4 },
    { pos: -1 },
    { epoch: 1.5 },
    { pos: "x" },
  ];
  for (const bad of tampered) {
    assert.throws(() => src.restore({ ...st, ...bad }), /train.txt: cannot restore/);
  }
  src.restore(st); // the untouched state still works
  assert.equal(src.next().ids.length, 4);
});

function configJson(): Record<string, unknown> {
  return {
    model_type: "qwen3",
    hidden_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 1,
    head_dim: 8,
    intermediate_size: 24,
    vocab_size: 20,
    max_position_embeddings: 64,
    dms_window_size: 4,
    dms_paged_attention_block_size: 2,
  };
}

const config = parseConfig(configJson(), "tiny");

const STATE: TrainerState = {
  version: 1,
  step: 3,
  seed: 7,
  schedule: { initialCr: 1, finalCr: 4, finalStep: 10 },
  data: { kind: "generator", seed: 7, index: 3 },
  parameters: ["p"],
  options: {},
};

Deno.test({
  name:
    "hostile retrofit checkpoints: missing optimizer state, wrong shapes and dtypes, truncations",
  ...GPU_TEST,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    const model = createModel(gpu, config, { seed: 4 });
    try {
      const m = [new Float32Array(6).fill(1)], v = [new Float32Array(6).fill(2)];
      const ck = await saveCheckpoint(dir, model, STATE, {
        names: ["p"],
        optimizer: { step: 3, m, v },
        shapes: [[2, 3]],
      });
      assert.equal((await readOptimizerState(ck, ["p"], [[2, 3]])).step, 3);

      // moments of another shape, or stored as F16
      const opt = `${ck}/optimizer.safetensors`;
      await assert.rejects(
        () => readOptimizerState(ck, ["p"], [[3, 2]]),
        (e: Error) =>
          e instanceof RangeError && e.message.includes(opt) && e.message.includes('"p.exp_avg"') &&
          e.message.includes("[2, 3]") && e.message.includes("[3, 2]"),
      );
      await writeSafetensors(opt, {
        "p.exp_avg": { dtype: "F16", shape: [2, 3], data: m[0] },
        "p.exp_avg_sq": { dtype: "F32", shape: [2, 3], data: v[0] },
      }, { step: "3" });
      await assert.rejects(() => readOptimizerState(ck, ["p"]), /"p.exp_avg" is F16, expected F32/);
      await writeSafetensors(opt, { "p.exp_avg": { dtype: "F32", shape: [2, 3], data: m[0] } });
      await assert.rejects(() => readOptimizerState(ck, ["p"]), /metadata "step"/);
      // a weights-only checkpoint cannot resume an optimizer
      await Deno.remove(opt);
      await assert.rejects(
        () => readOptimizerState(ck, ["p"]),
        new RegExp(`${opt} is missing: the checkpoint holds no optimizer state`),
      );

      // trainer_state.json: truncated, wrong field types
      const stateFile = `${ck}/trainer_state.json`;
      const text = await Deno.readTextFile(stateFile);
      for (let cut = 0; cut < text.length - 1; cut += 11) {
        await Deno.writeTextFile(stateFile, text.slice(0, cut));
        await assert.rejects(
          () => readTrainerState(ck),
          (e: Error) => e instanceof SyntaxError && e.message.startsWith(`${stateFile}: `),
        );
      }
      for (
        const [field, value] of [
          ["step", "3"],
          ["step", -1],
          ["seed", 1.5],
          ["data", null],
          ["parameters", [1]],
          ["schedule", []],
        ] as const
      ) {
        await Deno.writeTextFile(stateFile, JSON.stringify({ ...STATE, [field]: value }));
        await assert.rejects(
          () => readTrainerState(ck),
          (e: Error) =>
            e instanceof TypeError && e.message.startsWith(`${stateFile}: field "${field}"`),
          field,
        );
      }
      await Deno.writeTextFile(stateFile, "[]");
      await assert.rejects(() => readTrainerState(ck), /expected a JSON object/);

      // weights of another model, and a truncated model.safetensors
      const other = createModel(gpu, parseConfig({ ...configJson(), intermediate_size: 32 }), {
        seed: 1,
      });
      try {
        await assert.rejects(
          () => restoreWeights(other, ck),
          (e: Error) =>
            e instanceof RangeError &&
            e.message.includes("mlp.gate_proj.weight: expected [32, 16]") &&
            e.message.includes(`${ck}/model.safetensors`),
        );
      } finally {
        other.dispose();
      }
      const weights = `${ck}/model.safetensors`;
      const bytes = await Deno.readFile(weights);
      await Deno.writeFile(weights, bytes.slice(0, bytes.length - 100));
      await assert.rejects(
        () => restoreWeights(model, ck),
        (e: Error) => e.message.includes(weights),
      );

      // a checkpoint folder without trainer_state.json is not "the latest"
      await Deno.remove(stateFile);
      assert.equal(await latestCheckpoint(dir), null);
    } finally {
      model.dispose();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
