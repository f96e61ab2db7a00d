/**
 * Synthetic long-range tasks: prompts whose answers depend on tokens far back in the context
 * (well past a DMS window), over a small synthetic vocabulary, so a tiny model can be pre-trained
 * on them and a retrofitted one evaluated (issue 9 item 7; issue 11 reuses them). Deterministic by
 * seed: sample `i` of a seed is the same whatever the count. No tokenizer.
 *
 * Token layout ({@linkcode taskVocab}): ids 0–15 are special tokens (PAD 0, BOS 1, EOS 2, SEP `;` 3,
 * QUERY 4, ANSWER 5, EQ `=` 6, RESULT 7, 8–15 reserved), then `keys` key/variable tokens `k0…`,
 * `values` value tokens `v0…` (value `vi` stands for the number i, sums are modulo `values`), and
 * `filler` filler tokens `f0…`. Default 64 + 32 + 16 → vocabulary 128.
 *
 * Every prompt is exactly `length` tokens: `BOS`, a haystack of filler with the evidence groups
 * inserted at random gaps (all of them between `depth[0]` and `depth[1]` of the haystack; 0 = the
 * start, farthest from the question), then the question. Filler "cycle" (default) repeats
 * `f0 f1 … f15 f0 …` (a predictable "the grass is green" text), "random" draws each filler token.
 *
 * - **kv** (needle in a haystack, single or multi-key): `pairs` groups `k = v ;` with distinct keys,
 *   then `QUERY ka kb … ANSWER` for `queries` distinct keys among them. Answer `va vb … EOS`.
 * - **vartrack** (variable tracking, RULER-style multi-hop): `chains` chains of `hops` statements,
 *   `x1 = v ;` then `x2 = x1 ;` … `xh = x(h−1) ;`, every variable a distinct key token, the chains'
 *   values distinct, statements of all chains interleaved at random with each chain in order, so
 *   the hops spread over the whole context. Question `QUERY xh ANSWER` for the last variable of
 *   chain 0. Answer `v EOS`.
 * - **sum** (multi-step reasoning): `pairs` groups `k = v ;`, question `QUERY ka kb … ANSWER` with
 *   `terms` distinct keys. With `showWork` (default) the answer writes the chain out, one step per
 *   term: `ka va s1 ; kb vb s2 ; … RESULT sn EOS` where `s_i = (v_a + … ) mod values` is the
 *   running sum; without it the answer is `RESULT sn EOS`. Each step is one long-range lookup
 *   and one local addition, so a written-out chain (and majority votes over sampled chains) raise
 *   accuracy over answering at once.
 *
 * A sample's `result` is what is graded ({@linkcode extractResult}): the generated tokens up to the
 * first EOS, after the last RESULT if there is one.
 *
 * @example Ten needle-in-a-haystack prompts of 512 tokens
 * ```ts
 * import { generateTask } from "./tasks.ts";
 * const samples = generateTask({ kind: "kv", length: 512, pairs: 4 }, { count: 10, seed: 1 });
 * console.log(samples[0].prompt.length, samples[0].answer); // 512 [v, 2]
 * ```
 *
 * @module
 */

/** Special token ids (the first 16 ids of every task vocabulary). */
export const TOKENS: Readonly<{
  PAD: 0;
  BOS: 1;
  EOS: 2;
  SEP: 3;
  QUERY: 4;
  ANSWER: 5;
  EQ: 6;
  RESULT: 7;
}> = Object.freeze({
  PAD: 0,
  BOS: 1,
  EOS: 2,
  SEP: 3,
  QUERY: 4,
  ANSWER: 5,
  EQ: 6,
  RESULT: 7,
});

/** Ids reserved for special tokens. */
export const SPECIAL_TOKENS = 16;

/** The id ranges of a task vocabulary (see the module doc). */
export interface TaskVocab {
  /** Key / variable tokens: ids `keyBase … keyBase + keys − 1`. */
  keys: number;
  /** Value tokens (number i is id `valueBase + i`). */
  values: number;
  /** Filler tokens. */
  filler: number;
  /** First key id (16). */
  keyBase: number;
  /** First value id. */
  valueBase: number;
  /** First filler id. */
  fillerBase: number;
  /** Vocabulary size: 16 + keys + values + filler. */
  size: number;
}

/** Sizes of a task vocabulary; defaults 64 keys, 32 values, 16 filler (size 128). */
export interface TaskVocabOptions {
  /** Key tokens (default 64). */
  keys?: number;
  /** Value tokens (default 32). */
  values?: number;
  /** Filler tokens (default 16). */
  filler?: number;
}

/**
 * The token layout for these sizes.
 *
 * @throws {RangeError} For a size that is not a positive integer.
 */
export function taskVocab(opts: TaskVocabOptions = {}): TaskVocab {
  const keys = opts.keys ?? 64, values = opts.values ?? 32, filler = opts.filler ?? 16;
  for (const [k, x] of [["keys", keys], ["values", values], ["filler", filler]] as const) {
    if (!(Number.isInteger(x) && x >= 1)) {
      throw new RangeError(`taskVocab: ${k} must be a positive integer, got ${x}`);
    }
  }
  const keyBase = SPECIAL_TOKENS, valueBase = keyBase + keys, fillerBase = valueBase + values;
  return { keys, values, filler, keyBase, valueBase, fillerBase, size: fillerBase + filler };
}

/** Settings shared by every task. */
export interface TaskBase {
  /** Prompt length in tokens (exactly). */
  length: number;
  /** Fraction range of the haystack where evidence goes (default [0, 1]; 0 = start). */
  depth?: readonly [number, number];
  /** Filler text: "cycle" (default, predictable) or "random". */
  filler?: "cycle" | "random";
}

/** Key–value retrieval (needle in a haystack). */
export interface KvTask extends TaskBase {
  /** Task kind. */
  kind: "kv";
  /** `k = v ;` pairs in the haystack (distinct keys; 1 = a single needle). */
  pairs: number;
  /** Keys asked for (default 1). */
  queries?: number;
}

/** Variable tracking / multi-hop chains. */
export interface VarTrackTask extends TaskBase {
  /** Task kind. */
  kind: "vartrack";
  /** Chains (chain 0 is asked for, the others distract; default 1). */
  chains?: number;
  /** Statements per chain (1 = plain retrieval). */
  hops: number;
}

/** Summing retrieved values, optionally step by step. */
export interface SumTask extends TaskBase {
  /** Task kind. */
  kind: "sum";
  /** `k = v ;` pairs in the haystack. */
  pairs: number;
  /** Keys whose values are summed. */
  terms: number;
  /** Write the chain out before the result (default true). */
  showWork?: boolean;
}

/** A task: what to generate. */
export type Task = KvTask | VarTrackTask | SumTask;

/** One example. */
export interface TaskSample {
  /** Prompt token ids (`length` of them, starting with BOS, ending with ANSWER). */
  prompt: number[];
  /** The expected continuation, ending with EOS (the training target). */
  answer: number[];
  /** What grading compares ({@linkcode extractResult} of `answer`). */
  result: number[];
  /** Prompt indices of the evidence tokens the answer depends on. */
  evidence: number[];
}

/** Options of {@linkcode generateTask}. */
export interface GenerateTaskOptions {
  /** Samples. */
  count: number;
  /** Seed; sample i depends only on (task kind, seed, i). */
  seed: number;
  /** Token layout (default `taskVocab()`). */
  vocab?: TaskVocab;
  /** Index of the first sample (default 0): shards a stream of samples. */
  offset?: number;
}

/** mulberry32, seeded by a hash of the parts. */
function rng(...parts: number[]): () => number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = Math.imul(h ^ (p >>> 0), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    h ^= h >>> 16;
  }
  let a = h >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `k` distinct integers from [0, n) in random order. */
function distinct(rand: () => number, n: number, k: number): number[] {
  const all = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (n - i));
    [all[i], all[j]] = [all[j], all[i]];
  }
  return all.slice(0, k);
}

function checkInt(task: string, field: string, x: unknown, min: number): number {
  if (!(typeof x === "number" && Number.isInteger(x) && x >= min)) {
    throw new RangeError(`${task} task: ${field} must be an integer >= ${min}, got ${x}`);
  }
  return x;
}

/**
 * Lays out `BOS haystack question`: the groups go, in order, into random gaps of the filler within
 * the depth range. Returns the prompt and the index where each group starts.
 */
function layout(
  task: Task,
  vocab: TaskVocab,
  rand: () => number,
  groups: number[][],
  question: number[],
): { prompt: number[]; starts: number[] } {
  const evidence = groups.reduce((s, g) => s + g.length, 0);
  const F = task.length - 1 - evidence - question.length;
  if (F < 0) {
    throw new RangeError(
      `${task.kind} task: length ${task.length} is too short for ${evidence} evidence and ${question.length} question tokens`,
    );
  }
  const [lo, hi] = task.depth ?? [0, 1];
  if (!(lo >= 0 && hi <= 1 && lo <= hi)) {
    throw new RangeError(
      `${task.kind} task: depth must satisfy 0 <= lo <= hi <= 1, got [${lo}, ${hi}]`,
    );
  }
  const g0 = Math.floor(lo * F), g1 = Math.floor(hi * F);
  const gaps = groups.map(() => g0 + Math.floor(rand() * (g1 - g0 + 1))).sort((a, b) => a - b);
  const prompt: number[] = [TOKENS.BOS], starts: number[] = [];
  const fill = (j: number) =>
    vocab.fillerBase +
    (task.filler === "random" ? Math.floor(rand() * vocab.filler) : j % vocab.filler);
  let gi = 0;
  for (let j = 0; j <= F; j++) {
    while (gi < groups.length && gaps[gi] === j) {
      starts.push(prompt.length);
      prompt.push(...groups[gi++]);
    }
    if (j < F) prompt.push(fill(j));
  }
  prompt.push(...question);
  return { prompt, starts };
}

function kvSample(task: KvTask, v: TaskVocab, rand: () => number): TaskSample {
  const pairs = checkInt("kv", "pairs", task.pairs, 1);
  const queries = checkInt("kv", "queries", task.queries ?? 1, 1);
  if (pairs > v.keys) throw new RangeError(`kv task: pairs ${pairs} > keys ${v.keys}`);
  if (queries > pairs) throw new RangeError(`kv task: queries ${queries} > pairs ${pairs}`);
  const keys = distinct(rand, v.keys, pairs).map((k) => v.keyBase + k);
  const vals = keys.map(() => v.valueBase + Math.floor(rand() * v.values));
  const asked = distinct(rand, pairs, queries);
  const groups = keys.map((k, i) => [k, TOKENS.EQ, vals[i], TOKENS.SEP]);
  const question = [TOKENS.QUERY, ...asked.map((i) => keys[i]), TOKENS.ANSWER];
  const { prompt, starts } = layout(task, v, rand, groups, question);
  const result = asked.map((i) => vals[i]);
  return {
    prompt,
    answer: [...result, TOKENS.EOS],
    result,
    evidence: asked.map((i) => starts[i] + 2),
  };
}

function varTrackSample(task: VarTrackTask, v: TaskVocab, rand: () => number): TaskSample {
  const chains = checkInt("vartrack", "chains", task.chains ?? 1, 1);
  const hops = checkInt("vartrack", "hops", task.hops, 1);
  if (chains * hops > v.keys) {
    throw new RangeError(`vartrack task: chains·hops ${chains * hops} > keys ${v.keys}`);
  }
  if (chains > v.values) {
    throw new RangeError(`vartrack task: chains ${chains} > values ${v.values}`);
  }
  const names = distinct(rand, v.keys, chains * hops).map((k) => v.keyBase + k);
  const vals = distinct(rand, v.values, chains).map((x) => v.valueBase + x);
  // statement order: a shuffled multiset of chain ids; the j-th occurrence of chain c is hop j
  const order = distinct(rand, chains * hops, chains * hops).map((i) => i % chains);
  const seen = new Array(chains).fill(0);
  const groups: number[][] = [], who: [number, number][] = [];
  for (const c of order) {
    const j = seen[c]++;
    const name = names[c * hops + j];
    groups.push([name, TOKENS.EQ, j === 0 ? vals[c] : names[c * hops + j - 1], TOKENS.SEP]);
    who.push([c, j]);
  }
  const question = [TOKENS.QUERY, names[hops - 1], TOKENS.ANSWER];
  const { prompt, starts } = layout(task, v, rand, groups, question);
  const evidence = starts.filter((_, i) => who[i][0] === 0).map((s) => s + 2);
  return { prompt, answer: [vals[0], TOKENS.EOS], result: [vals[0]], evidence };
}

function sumSample(task: SumTask, v: TaskVocab, rand: () => number): TaskSample {
  const pairs = checkInt("sum", "pairs", task.pairs, 1);
  const terms = checkInt("sum", "terms", task.terms, 1);
  if (pairs > v.keys) throw new RangeError(`sum task: pairs ${pairs} > keys ${v.keys}`);
  if (terms > pairs) throw new RangeError(`sum task: terms ${terms} > pairs ${pairs}`);
  const keys = distinct(rand, v.keys, pairs).map((k) => v.keyBase + k);
  const nums = keys.map(() => Math.floor(rand() * v.values));
  const asked = distinct(rand, pairs, terms);
  const groups = keys.map((k, i) => [k, TOKENS.EQ, v.valueBase + nums[i], TOKENS.SEP]);
  const question = [TOKENS.QUERY, ...asked.map((i) => keys[i]), TOKENS.ANSWER];
  const { prompt, starts } = layout(task, v, rand, groups, question);
  const answer: number[] = [];
  let s = 0;
  for (const i of asked) {
    s = (s + nums[i]) % v.values;
    if (task.showWork ?? true) {
      answer.push(keys[i], v.valueBase + nums[i], v.valueBase + s, TOKENS.SEP);
    }
  }
  const result = [v.valueBase + s];
  answer.push(TOKENS.RESULT, ...result, TOKENS.EOS);
  return { prompt, answer, result, evidence: asked.map((i) => starts[i] + 2) };
}

const KIND_SALT = { kv: 1, vartrack: 2, sum: 3 } as const;

/**
 * Generates samples of a task, deterministic by (task kind, seed, index); the other task fields
 * shape the sample.
 *
 * @returns `count` samples, each prompt exactly `task.length` tokens.
 * @throws {RangeError} Naming the task field that is out of range (too short a length for the
 *   evidence, more pairs than keys, …).
 */
export function generateTask(task: Task, opts: GenerateTaskOptions): TaskSample[] {
  const vocab = opts.vocab ?? taskVocab();
  checkInt(task.kind, "length", task.length, 2);
  checkInt("generateTask", "count", opts.count, 0);
  const out: TaskSample[] = [];
  for (let i = 0; i < opts.count; i++) {
    const rand = rng(KIND_SALT[task.kind] ?? 0, opts.seed, (opts.offset ?? 0) + i);
    switch (task.kind) {
      case "kv":
        out.push(kvSample(task, vocab, rand));
        break;
      case "vartrack":
        out.push(varTrackSample(task, vocab, rand));
        break;
      case "sum":
        out.push(sumSample(task, vocab, rand));
        break;
      default:
        throw new RangeError(`generateTask: unknown task kind ${(task as Task).kind}`);
    }
  }
  return out;
}

/**
 * What grading compares: the tokens up to the first EOS (exclusive), after the last RESULT token
 * when there is one.
 *
 * @example
 * ```ts
 * import { extractResult, TOKENS } from "./tasks.ts";
 * console.log(extractResult([20, 30, TOKENS.RESULT, 41, TOKENS.EOS, 9])); // [41]
 * ```
 */
export function extractResult(tokens: readonly number[]): number[] {
  const e = tokens.indexOf(TOKENS.EOS);
  const upTo = e < 0 ? [...tokens] : tokens.slice(0, e);
  const r = upTo.lastIndexOf(TOKENS.RESULT);
  return r < 0 ? upTo : upTo.slice(r + 1);
}

/** A short human-readable name of a task, e.g. `kv(L=512,pairs=4)`. */
export function taskName(task: Task): string {
  const { kind, length, depth, filler, ...rest } = task;
  const parts = [`L=${length}`, ...Object.entries(rest).map(([k, x]) => `${k}=${x}`)];
  if (depth) parts.push(`depth=${depth[0]}-${depth[1]}`);
  if (filler) parts.push(`filler=${filler}`);
  return `${kind}(${parts.join(",")})`;
}

/** Renders token ids with the vocabulary's names (`BOS k3 = v7 ; f0 …`), for logs and tests. */
export function renderTokens(ids: readonly number[], vocab: TaskVocab = taskVocab()): string {
  const special = ["PAD", "BOS", "EOS", ";", "QUERY", "ANSWER", "=", "RESULT"];
  return ids.map((t) =>
    t < special.length
      ? special[t]
      : t < vocab.keyBase
      ? `?${t}`
      : t < vocab.valueBase
      ? `k${t - vocab.keyBase}`
      : t < vocab.fillerBase
      ? `v${t - vocab.valueBase}`
      : t < vocab.size
      ? `f${t - vocab.fillerBase}`
      : `?${t}`
  ).join(" ");
}
