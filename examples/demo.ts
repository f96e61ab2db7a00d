/**
 * DMS on a small model, dense and DMS side by side (`deno task demo`).
 *
 * A retrofitted DMS student of the committed teacher (testdata/students-all-weights/, W = 8) answers
 * key–value retrieval questions: 240-token prompts whose needle sits in the first half, far
 * outside the window, so the answer depends on a token that DMS must decide to keep. The same
 * prompts run through the dense cache and the DMS cache, in lockstep: the prompt is streamed
 * into each cache in chunks (recording the accounting after each, for the compression chart),
 * then the answers are decoded and printed as they arrive. At the end: per-head cache lengths,
 * KV reads, compression, accuracy, and two SVGs — the eviction map of the DMS cache (per layer
 * and KV head, which positions are kept, still in the window, or evicted) and compression over
 * the sequence.
 *
 * The dense side runs the teacher the student was retrofitted from (`--teacher`, default
 * testdata/teacher): with the paper's recipe every weight of the student changed, so the student
 * itself through a dense cache is not the baseline (it learnt to rely on its evictions).
 *
 *   deno task demo [--student DIR] [--teacher DIR] [--samples 4] [--seed 2026] [--out DIR]
 *
 * @module
 */

import {
  type CompressionPoint,
  createCacheFor,
  generate,
  type GenerateChunk,
  type GenerateResult,
  getGpu,
  type KvCache,
  loadModel,
  PagedKvCache,
} from "@hyperscale/dms";
import { slowAdapterHint } from "@hyperscale/dms/gpu";
import {
  compressionSvg,
  evictionCounts,
  evictionMapSvg,
  readEvictionMap,
} from "@hyperscale/dms/plot";
import { generateTask, renderTokens, type Task, taskVocab } from "../src/eval/tasks.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { scriptArgs } from "../src/cli/script_args.ts";

const DEFAULT_STUDENT = new URL("../testdata/students-all-weights/w8-step1000", import.meta.url)
  .pathname;
const DEFAULT_TEACHER = new URL("../testdata/teacher", import.meta.url).pathname;
const USAGE = `usage: deno task demo [flags]

  --student DIR   the DMS student (default testdata/students-all-weights/w8-step1000)
  --teacher DIR   the dense teacher it was retrofitted from (default testdata/teacher)
  --samples N     problems to answer, 1..64 (default 4)
  --seed N        seed of the problems (default 2026)
  --out DIR       where the two pictures go (default: a new temporary folder)`;

const args = scriptArgs("demo", USAGE, {
  student: { type: "string" },
  teacher: { type: "string" },
  samples: { type: "string" },
  seed: { type: "string" },
  out: { type: "string" },
});
const B = args.int("samples", 4, 1, 64), seed = args.int("seed", 2026);
const student = args.str("student") ?? DEFAULT_STUDENT;
const teacherDir = args.str("teacher") ?? DEFAULT_TEACHER;
try {
  await Deno.stat(`${teacherDir}/config.json`);
} catch {
  console.error(`demo: no teacher at ${teacherDir} (config.json missing); pass --teacher DIR`);
  Deno.exit(1);
}
try {
  await Deno.stat(`${student}/config.json`);
} catch {
  console.error(
    `demo: no DMS student at ${student} (config.json missing). The committed students live in ` +
      "testdata/students-all-weights/ and testdata/students/; make your own with `deno run -A examples/retrofit.ts --quick --save " +
      "/tmp/students` and pass --student /tmp/students/w8-step<N>.",
  );
  Deno.exit(1);
}

const t0 = performance.now();
const gpu = await getGpu();
const hint = slowAdapterHint(gpu.adapter); // llvmpipe through OpenGL: say how to get Vulkan
if (hint) console.log(hint);
const model = await loadModel(gpu, student, { dtype: "f32" });
const teacher = await loadModel(gpu, teacherDir, { dtype: "f32" });
const cfg = model.config;
const tc = teacher.config;
if (
  tc.numLayers !== cfg.numLayers || tc.numKvHeads !== cfg.numKvHeads ||
  tc.vocabSize !== cfg.vocabSize
) {
  console.error(
    `demo: teacher ${teacherDir} (${tc.numLayers} layers, ${tc.numKvHeads} KV heads, vocab ` +
      `${tc.vocabSize}) does not match student ${student} (${cfg.numLayers}, ${cfg.numKvHeads}, ` +
      `${cfg.vocabSize}); pass the teacher it was retrofitted from with --teacher DIR`,
  );
  Deno.exit(1);
}
if (!cfg.isDms) {
  console.error(`demo: ${student}/config.json has no dms_* fields: not a DMS checkpoint`);
  Deno.exit(1);
}
const W = cfg.dms.window;
const task: Task = { kind: "kv", length: 240, pairs: 1, depth: [0, 0.5] };
const samples = generateTask(task, { count: B, seed });
const vocab = taskVocab();
if (cfg.vocabSize < vocab.size) {
  console.error(`demo: ${student} has vocab_size ${cfg.vocabSize} < the task's ${vocab.size}`);
  Deno.exit(1);
}

/** Token names with runs of filler shortened: `f3 f4 … (37 filler) … f8`. */
function readable(ids: readonly number[]): string {
  const names = renderTokens(ids, vocab).split(" ");
  const out: string[] = [];
  for (let i = 0; i < names.length;) {
    let j = i;
    while (j < names.length && names[j].startsWith("f")) j++;
    if (j - i > 4) out.push(names[i], `…(${j - i - 2} filler)…`, names[j - 1]);
    else out.push(...names.slice(i, Math.max(j, i + 1)));
    i = Math.max(j, i + 1);
  }
  return out.join(" ");
}

const s0 = samples[0];
// the needle group `k = v ;` starts two tokens before the value (the task's evidence)
const needle = [0, 1, 2, 3].map((i) => s0.evidence[0] - 2 + i);
console.log(
  `DMS demo — student ${student.replace(/^.*\/testdata\//, "testdata/")} (dense: teacher ${
    teacherDir.replace(/^.*\/testdata\//, "testdata/")
  }): ${cfg.numLayers} layers, ` +
    `${cfg.numKvHeads} KV heads, window W = ${W}; ${gpu.description}`,
);
console.log(
  `task: key–value retrieval, ${B} prompts of ${task.length} tokens, the needle in the first half`,
);
console.log(`  prompt 0: ${readable(s0.prompt)}`);
console.log(
  `  needle "${renderTokens(needle.map((i) => s0.prompt[i]), vocab)}" at positions ` +
    `${needle[0]}–${needle[3]}, ${task.length - 1 - needle[3]} tokens before the question ` +
    `(W = ${W}); expected answer: ${renderTokens(s0.answer, vocab)}\n`,
);

const CHUNK = 16;
const policies = ["dense", "dms"] as const;
const caches: Record<string, KvCache> = {};
const trace: CompressionPoint[] = [];
/** The dense cache runs the teacher, the DMS cache the student. */
const modelFor = { dense: teacher, dms: model } as const;
for (const p of policies) caches[p] = createCacheFor(modelFor[p], B, p);

/** Drains a generator, returning its result. */
async function finish(gen: AsyncGenerator<GenerateChunk, GenerateResult>): Promise<GenerateResult> {
  let r = await gen.next();
  while (!r.done) r = await gen.next();
  return r.value;
}

// 1. stream the prompts into both caches, chunk by chunk (the token sampled after each chunk is
//    discarded: the next chunk is the prompt's), recording the accounting after each chunk
const P = task.length, body = P - CHUNK;
for (let s = 0; s < body; s += CHUNK) {
  for (const p of policies) {
    await finish(generate(modelFor[p], samples.map((x) => x.prompt.slice(s, s + CHUNK)), {
      maxTokens: 1,
      cache: caches[p],
    }));
    const st = await caches[p].stats();
    trace.push({
      policy: p,
      tokensSeen: st.tokensSeen,
      liveTokens: st.liveTokens,
      compressionRatio: st.compressionRatio,
    });
  }
}

// 2. the last chunk (the question) and the answers, both caches in lockstep, streamed
console.log(`streaming the answers of the ${B} prompts:`);
const gens = Object.fromEntries(policies.map((p) => [
  p,
  generate(modelFor[p], samples.map((x) => x.prompt.slice(body)), {
    maxTokens: 4,
    cache: caches[p],
    readbackEvery: 1,
  }),
]));
const answers: Record<string, number[][]> = {
  dense: samples.map(() => []),
  dms: samples.map(() => []),
};
const results: Record<string, GenerateResult> = {};
const cell = (ids: readonly number[]) => renderTokens(ids, vocab).padEnd(4);
for (let step = 1; Object.keys(results).length < policies.length; step++) {
  const row: string[] = [];
  for (const p of policies) {
    const r = results[p] ? undefined : await gens[p].next();
    if (!r || r.done) {
      if (r?.done) results[p] = r.value;
      continue;
    }
    const st = await caches[p].stats();
    trace.push({
      policy: p,
      tokensSeen: st.tokensSeen,
      liveTokens: st.liveTokens,
      compressionRatio: st.compressionRatio,
    });
    r.value.tokens.forEach((t, b) => answers[p][b].push(...t));
    row.push(`${p.padStart(5)}: ${r.value.tokens.map(cell).join(" ")}`);
  }
  if (row.length) console.log(`  token ${step}   ${row.join("   |   ")}`);
}
const correct = (p: string) =>
  samples.filter((x, b) => answers[p][b].join() === x.answer.join()).length;
console.log(`  expected: ${samples.map((x) => renderTokens(x.answer, vocab)).join(" | ")}`);

// 3. the accounting, side by side
const [dense, dms] = [results.dense.stats, results.dms.stats];
const dmsCache = caches.dms;
if (!(dmsCache instanceof PagedKvCache)) throw new Error("demo: the DMS cache is not paged");
const map = await readEvictionMap(dmsCache, { sequence: 0 });
const counts = evictionCounts(map);
console.log(`\nafter ${dms.tokensSeen} positions, prompt 0, KV entries per (layer, head):`);
for (let l = 0; l < cfg.numLayers; l++) {
  for (let h = 0; h < cfg.numKvHeads; h++) {
    const c = counts[l][h];
    const kept = needle.filter((i) => map.states[l][h][i] === "kept");
    console.log(
      `  layer ${l} head ${h}:  dense ${String(dense.lengths[l][h]).padStart(4)}   DMS ` +
        `${String(dms.lengths[l][h]).padStart(4)} = ${String(c.kept).padStart(3)} kept + ` +
        `${c.window} in the window (${c.evicted} evicted); needle positions kept: ` +
        `${kept.length ? kept.join(", ") : "none"}`,
    );
  }
}
const line = (name: string, a: string | number, b: string | number) =>
  console.log(`  ${name.padEnd(40)}${String(a).padStart(10)}${String(b).padStart(10)}`);
console.log("");
line("", "dense", "DMS");
line(`answers correct (of ${B})`, correct("dense"), correct("dms"));
line("live KV entries, all prompts", dense.liveTokens, dms.liveTokens);
line("peak KV bytes", dense.peakBytes, dms.peakBytes);
line(
  `KV entries read while decoding (${dms.decodeSteps} step${dms.decodeSteps === 1 ? "" : "s"})`,
  dense.readTokens,
  dms.readTokens,
);
line(
  "compression ratio (get_cr)",
  dense.compressionRatio.toFixed(2),
  dms.compressionRatio.toFixed(2),
);
line(
  "compression ratio (dense/kept)",
  dense.compressionRatioDenseOverKept.toFixed(2),
  dms.compressionRatioDenseOverKept.toFixed(2),
);

// 4. the pictures
const out = args.str("out") ?? await Deno.makeTempDir({ prefix: "dms-demo-" });
const mapPath = `${out}/eviction_map.svg`, crPath = `${out}/compression.svg`;
await writeTextFileAtomic(
  mapPath,
  await evictionMapSvg(map, `DMS eviction map, prompt 0 (${map.tokensSeen} positions, W = ${W})`),
);
await writeTextFileAtomic(
  crPath,
  await compressionSvg(trace, "Compression over the sequence, all prompts"),
);
console.log(`\neviction map: ${mapPath}\ncompression:  ${crPath}`);
console.log(`(${((performance.now() - t0) / 1000).toFixed(1)} s)`);
for (const c of Object.values(caches)) c.dispose();
model.dispose();
teacher.dispose();
