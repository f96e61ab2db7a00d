import assert from "node:assert/strict";
import fc from "fast-check";
import {
  extractResult,
  generateTask,
  renderTokens,
  type Task,
  taskName,
  type TaskSample,
  type TaskVocab,
  taskVocab,
  TOKENS,
} from "../../src/eval/tasks.ts";
import { fcParams } from "../_util.ts";

const { BOS, EOS, SEP, QUERY, ANSWER, EQ, RESULT } = TOKENS;

/**
 * Brute force, independent of the generator: parses the `x = y ;` statements anywhere in the
 * prompt, resolves each asked name by following assignments, and writes the expected answer.
 */
function solve(task: Task, prompt: readonly number[], v: TaskVocab): number[] {
  const bind = new Map<number, number>();
  for (let i = 0; i + 3 < prompt.length; i++) {
    if (prompt[i + 1] === EQ && prompt[i + 3] === SEP) {
      assert.ok(!bind.has(prompt[i]), `name ${prompt[i]} assigned twice`);
      bind.set(prompt[i], prompt[i + 2]);
    }
  }
  const q = prompt.lastIndexOf(QUERY);
  assert.equal(prompt[prompt.length - 1], ANSWER);
  const asked = prompt.slice(q + 1, prompt.length - 1);
  const resolve = (name: number): number => {
    let x = name;
    for (let hops = 0; x < v.valueBase; hops++) {
      assert.ok(hops <= v.keys, "assignment cycle");
      assert.ok(bind.has(x), `name ${x} unbound`);
      x = bind.get(x)!;
    }
    return x;
  };
  if (task.kind !== "sum") return [...asked.map(resolve), EOS];
  const out: number[] = [];
  let s = 0;
  for (const k of asked) {
    const n = resolve(k) - v.valueBase;
    s = (s + n) % v.values;
    if (task.showWork ?? true) out.push(k, v.valueBase + n, v.valueBase + s, SEP);
  }
  return [...out, RESULT, v.valueBase + s, EOS];
}

const taskArb: fc.Arbitrary<Task> = fc.oneof(
  fc.record({
    kind: fc.constant("kv" as const),
    length: fc.integer({ min: 40, max: 600 }),
    pairs: fc.integer({ min: 1, max: 6 }),
    queries: fc.integer({ min: 1, max: 3 }),
    filler: fc.constantFrom("cycle" as const, "random" as const),
  }).map((t) => ({ ...t, queries: Math.min(t.queries, t.pairs) })),
  fc.record({
    kind: fc.constant("vartrack" as const),
    length: fc.integer({ min: 64, max: 600 }), // >= 1 + 4·chains·hops + 3
    chains: fc.integer({ min: 1, max: 3 }),
    hops: fc.integer({ min: 1, max: 5 }),
  }),
  fc.record({
    kind: fc.constant("sum" as const),
    length: fc.integer({ min: 40, max: 600 }),
    pairs: fc.integer({ min: 3, max: 6 }),
    terms: fc.integer({ min: 1, max: 3 }),
    showWork: fc.boolean(),
    depth: fc.constantFrom(undefined, [0, 0.25] as const),
  }),
);

function checkSample(task: Task, s: TaskSample, v: TaskVocab): void {
  assert.equal(s.prompt.length, task.length);
  assert.equal(s.prompt[0], BOS);
  for (const t of [...s.prompt, ...s.answer]) assert.ok(t >= 0 && t < v.size, `token ${t}`);
  assert.deepEqual(s.answer, solve(task, s.prompt, v), renderTokens(s.prompt, v));
  assert.deepEqual(s.result, extractResult(s.answer));
  for (const e of s.evidence) assert.ok(e > 0 && e < s.prompt.length - 1);
}

Deno.test("every generated answer equals a brute-force solution recomputed from the prompt", () => {
  fc.assert(
    fc.property(taskArb, fc.integer({ min: 0, max: 1000 }), (task, seed) => {
      const v = taskVocab();
      for (const s of generateTask(task, { count: 4, seed, vocab: v })) checkSample(task, s, v);
    }),
    fcParams(150),
  );
});

Deno.test("samples are deterministic by seed and independent of the count", () => {
  const task: Task = { kind: "vartrack", length: 256, chains: 2, hops: 3 };
  const a = generateTask(task, { count: 5, seed: 7 });
  assert.deepEqual(generateTask(task, { count: 5, seed: 7 }), a);
  assert.deepEqual(generateTask(task, { count: 2, seed: 7, offset: 3 }), a.slice(3));
  assert.notDeepEqual(generateTask(task, { count: 5, seed: 8 }), a);
});

Deno.test("evidence lies within the depth range, far from the question at long lengths", () => {
  const task: Task = { kind: "kv", length: 4096, pairs: 8, queries: 2, depth: [0, 0.2] };
  for (const s of generateTask(task, { count: 20, seed: 1 })) {
    for (const e of s.evidence) {
      assert.ok(e < 0.2 * 4096 + 40, `evidence at ${e}`);
      assert.ok(s.prompt.length - e > 3000, "distance past any window up to 3000");
      assert.ok(s.answer.slice(0, -1).includes(s.prompt[e]));
    }
  }
});

Deno.test("vartrack spreads a chain's hops over the context, each the previous hop's name", () => {
  const v = taskVocab();
  let spread = 0;
  for (
    const s of generateTask({ kind: "vartrack", length: 2048, chains: 3, hops: 4 }, {
      count: 10,
      seed: 2,
    })
  ) {
    assert.equal(s.evidence.length, 4);
    assert.equal(s.prompt[s.evidence[0]], s.result[0]); // the root holds the value
    for (let j = 1; j < 4; j++) {
      assert.equal(s.prompt[s.evidence[j]], s.prompt[s.evidence[j - 1] - 2]); // x_{j+1} = x_j
      assert.ok(s.evidence[j] > s.evidence[j - 1]);
    }
    assert.equal(s.prompt[s.prompt.length - 2], s.prompt[s.evidence[3] - 2]); // asks the last
    spread += s.evidence[3] - s.evidence[0];
    assert.ok(s.prompt[s.evidence[0]] >= v.valueBase);
  }
  assert.ok(spread / 10 > 400, `mean spread ${spread / 10}`);
});

Deno.test("sum with showWork writes one step per term; without it only the result", () => {
  const v = taskVocab({ values: 10 });
  const [a] = generateTask({ kind: "sum", length: 64, pairs: 5, terms: 3 }, {
    count: 1,
    seed: 3,
    vocab: v,
  });
  const [b] = generateTask({ kind: "sum", length: 64, pairs: 5, terms: 3, showWork: false }, {
    count: 1,
    seed: 3,
    vocab: v,
  });
  assert.equal(a.answer.length, 3 * 4 + 3);
  assert.deepEqual(b.answer, [RESULT, ...a.result, EOS]);
  assert.deepEqual(a.result, b.result);
  assert.ok(a.result[0] >= v.valueBase && a.result[0] < v.valueBase + 10);
});

Deno.test("filler 'cycle' repeats f0..f15 between the evidence groups", () => {
  const v = taskVocab();
  const [s] = generateTask({ kind: "kv", length: 100, pairs: 1 }, { count: 1, seed: 4 });
  const fill = s.prompt.filter((t) => t >= v.fillerBase);
  fill.forEach((t, j) => assert.equal(t, v.fillerBase + (j % 16)));
  assert.equal(fill.length, 100 - 1 - 4 - 3);
});

Deno.test("generateTask names the field that is out of range", () => {
  assert.throws(
    () => generateTask({ kind: "kv", length: 6, pairs: 2 }, { count: 1, seed: 0 }),
    /kv task: length 6 is too short/,
  );
  assert.throws(
    () => generateTask({ kind: "kv", length: 60, pairs: 2, queries: 3 }, { count: 1, seed: 0 }),
    /queries 3 > pairs 2/,
  );
  assert.throws(
    () => generateTask({ kind: "vartrack", length: 60, hops: 0 }, { count: 1, seed: 0 }),
    /hops must be/,
  );
  assert.throws(
    () => generateTask({ kind: "sum", length: 60, pairs: 99, terms: 1 }, { count: 1, seed: 0 }),
    /pairs 99 > keys 64/,
  );
  assert.throws(
    () =>
      generateTask({ kind: "kv", length: 60, pairs: 1, depth: [0.5, 0.2] }, { count: 1, seed: 0 }),
    /depth/,
  );
  assert.throws(() => taskVocab({ values: 0 }), /values must be a positive integer/);
});

Deno.test("extractResult cuts at the first EOS and after the last RESULT", () => {
  assert.deepEqual(extractResult([30, 31, EOS, 32]), [30, 31]);
  assert.deepEqual(extractResult([30, RESULT, 31, RESULT, 40]), [40]);
  assert.deepEqual(extractResult([RESULT, 40, EOS, RESULT, 41]), [40]);
  assert.deepEqual(extractResult([]), []);
  assert.equal(taskName({ kind: "kv", length: 64, pairs: 2 }), "kv(L=64,pairs=2)");
  assert.equal(renderTokens([BOS, 16, EQ, 80, SEP, 112]), "BOS k0 = v0 ; f0");
});
