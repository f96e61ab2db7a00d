/**
 * Pre-trains a small Qwen3-architecture teacher from scratch on the synthetic long-range tasks of
 * `src/eval/tasks.ts` (issue 9 item 7), with the library's own training step (`forwardBackward`,
 * objective "lm": next-token cross-entropy on the answer tokens via `targetWeights`, or with
 * `--loss all` on every token) and the GPU AdamW, then saves it as a
 * Hugging Face folder that `loadModel` reads.
 *
 * Training rows: one task sample (a prompt of random length in [`--min-length`, S − 16], the
 * task drawn from `--tasks` per row with a random difficulty) followed by its answer, then extra
 * retrieval rounds `QUERY name ANSWER value EOS`, one for every other name bound in the same
 * context (resolved by following the `x = y ;` statements; intermediate variables too), each
 * asked once so that its answer must come from the context, not from an earlier round; PAD up to
 * S = `--seq` tokens. The rounds multiply the answer tokens per row. With the loss on every
 * token (`--loss all`) the random keys and values of the haystack drown the answers: a 2-layer
 * model then learns to copy some value of the context but not which one (measured: kv accuracy at
 * chance after 5000 steps on an H200).
 *
 * Evaluation every `--eval-every` steps and at the end: `evaluateTask` (greedy, dense cache) on
 * `--eval-samples` fresh samples (a seed the training rows never use) of each task at
 * `--eval-length` tokens.
 *
 * Usage on the GPU machine (one command; `.gpu/setup.sh` puts deno and the Vulkan loader in place):
 * ```sh
 * source .gpu/setup.sh && deno run -A tools/pretrain_teacher.ts --hidden 128 --layers 2 \
 *   --heads 4 --kv-heads 2 --seq 256 --min-length 64 --batch 64 --steps 100000 \
 *   --max-seconds 300 --warmup 200 --eval-every 2000 --eval-samples 64 --log-every 500 \
 *   --out teacher/ --json teacher.json
 * ```
 * Estimate for it (not measured): the runs below reach 0.2–1.7 TFLOP/s effective (more for
 * bigger steps), about 45 GFLOP a step here, so ~15–20 steps/s, ~5K steps in 300 s.
 *
 * Measured training speed (f32, WebGPU; evaluations excluded):
 *
 * | machine             | model (params)       | rows × S  | steps/s | tokens/s |
 * | ------------------- | -------------------- | --------- | ------- | -------- |
 * | H200 (Vulkan)       | 64 × 2 layers (0.11M) | 32 × 256  | 33      | 270K     |
 * | H200 (Vulkan)       | 96 × 3 (0.34M)       | 32 × 256  | 22      | 180K     |
 * | H200 (Vulkan)       | 128 × 4 (0.80M)      | 16 × 1024 | 8.2     | 135K     |
 * | H200 (Vulkan)       | 256 × 4 (3.2M)       | 16 × 1024 | 4.2     | 70K      |
 * | lavapipe, 2 shared cores | 64 × 2 (0.11M)  | 32 × 64   | 0.7     | 1.4K     |
 *
 * Accuracy so far (dense cache, 32–64 samples per task at L = 240; chance: kv 1/4 among the
 * context's values, vartrack 1/2): no run has learnt the key matching yet. 64 × 2, loss on
 * every token, 6800 steps: kv 0.22, vartrack 0.41, sum 0.00; answers only, 4000 steps: kv 0.19,
 * vartrack 0.44, sum 0.08. The model learns to copy *a* value of the context (1 pair: 100%) but
 * not *which* one; gradients agree with finite differences of the f64 reference at T = 70, so
 * this is the slow phase transition of associative recall, not a wrong gradient. The
 * embedding-dominated init (`--out-scale`) and the curriculum were added after those runs and
 * are not measured on the GPU yet.
 *
 * `--help` lists every option.
 *
 * @module
 */

import { scriptArgs } from "../src/cli/script_args.ts";
import { getGpu } from "../src/gpu/device.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";
import { parseConfig } from "../src/model/config.ts";
import { createModel, saveModel } from "../src/model/model.ts";
import { AdamW, clipGradients } from "../src/train/adamw.ts";
import { forwardBackward, trainableParameters } from "../src/train/train_step.ts";
import { evaluateTask } from "../src/eval/task_eval.ts";
import {
  generateTask,
  renderTokens,
  type Task,
  taskName,
  taskVocab,
  TOKENS,
} from "../src/eval/tasks.ts";

const HELP = `pretrain_teacher: train a small Qwen3 model on synthetic long-range tasks

  --hidden N          hidden size (default 64)
  --layers N          decoder layers (default 2)
  --heads N           query heads (default 4); --kv-heads N (default 2); head dim = hidden/heads
  --intermediate N    MLP width (default 3·hidden)
  --seq N             training row length S (default 128)
  --min-length N      shortest training prompt (default 48)
  --batch N           rows per step (default 16)
  --steps N           optimizer steps (default 300)
  --max-seconds X     stop after this much training time; the schedule then runs on
                      max(step/steps, elapsed/X) (default: no limit)
  --lr X              peak learning rate (default 3e-3), linear warm-up, cosine to 10%
  --warmup N          warm-up steps (default 30)
  --weight-decay X    AdamW weight decay (default 0.01); --clip X global norm (default 1)
  --loss answers|all  cross-entropy on the answer tokens only (default) or on every token
  --curriculum F      the longest training prompt grows linearly from --min-length to S − 16
                      over this fraction of the run (default 0.3; 0 = off)
  --tasks LIST        comma list of kv,vartrack,sum (default all three)
  --eval-length N     prompt length of the evaluation (default S − 16)
  --eval-samples N    samples per task per evaluation (default 32); --eval-every N (default 100)
  --embed-std X       std of the (tied) embedding init (default 0.1)
  --out-scale X       o_proj and down_proj init scaled by X (default embed-std/√(2·layers)):
                      the residual stream starts dominated by the token embeddings
  --log-every N       progress line every N steps (default 10)
  --seed N            seed of weights and data (default 1)
  --out DIR           save the model there (config.json + model.safetensors)
  --show-rows N       print N training rows (token names) and exit
  --json FILE         write the log (steps, losses, accuracies, speed) as JSON`;

/** The task of a training row or an evaluation, by name, at prompt length `length`. */
function taskOf(name: string, length: number): Task {
  switch (name) {
    case "kv":
      return { kind: "kv", length, pairs: 4 };
    case "vartrack":
      return { kind: "vartrack", length, chains: 2, hops: 2 };
    case "sum":
      return { kind: "sum", length, pairs: 4, terms: 2 };
    default:
      throw new RangeError(`--tasks: unknown task ${name} (kv, vartrack, sum)`);
  }
}

/** mulberry32. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Every name bound in the prompt (`x = y ;`) resolved to its value token. */
function bindings(prompt: readonly number[], valueBase: number): Map<number, number> {
  const bind = new Map<number, number>();
  for (let i = 0; i + 3 < prompt.length; i++) {
    if (prompt[i + 1] === TOKENS.EQ && prompt[i + 3] === TOKENS.SEP) {
      bind.set(prompt[i], prompt[i + 2]);
    }
  }
  const out = new Map<number, number>();
  for (const name of bind.keys()) {
    let x = name;
    for (let hop = 0; x < valueBase && bind.has(x) && hop <= bind.size; hop++) x = bind.get(x)!;
    if (x >= valueBase) out.set(name, x);
  }
  return out;
}

/**
 * The task of a training row: the kind's evaluation task with a random difficulty that fits
 * `length` (kv 1–12 pairs; vartrack 1–3 chains of 1–3 hops; sum 2–8 pairs, 1–3 terms).
 */
function trainingTask(name: string, length: number, r: () => number): Task {
  const groups = Math.max(1, Math.floor((length - 12) / 4)); // evidence groups that fit
  const pick = (lo: number, hi: number) => lo + Math.floor(r() * (Math.max(lo, hi) - lo + 1));
  switch (name) {
    case "kv":
      return { kind: "kv", length, pairs: pick(1, Math.min(12, groups)) };
    case "vartrack": {
      const chains = pick(1, Math.min(3, groups));
      return { kind: "vartrack", length, chains, hops: pick(1, Math.min(3, groups / chains)) };
    }
    case "sum": {
      const pairs = pick(2, Math.min(8, groups));
      return { kind: "sum", length, pairs, terms: pick(1, Math.min(3, pairs)) };
    }
    default:
      return taskOf(name, length);
  }
}

/**
 * One training row of exactly `S` tokens (see the module doc) and the indices of its answer
 * tokens (every token after an ANSWER, up to and including its EOS).
 */
function trainingRow(
  tasks: string[],
  S: number,
  minLen: number,
  seed: number,
  i: number,
  maxLen = S - 16,
): { row: number[]; answers: number[] } {
  const r = rng(seed * 1000003 + i);
  const name = tasks[Math.floor(r() * tasks.length)];
  const hi = Math.max(minLen, Math.min(maxLen, S - 16)); // answers <= 15 tokens
  const length = minLen + Math.floor(r() * (hi - minLen + 1));
  const [s] = generateTask(trainingTask(name, length, r), { count: 1, seed: seed + 17, offset: i });
  const row = [...s.prompt, ...s.answer];
  const answers = s.answer.map((_, j) => s.prompt.length + j);
  // every other bound name asked once, in random order: each answer must come from the context
  const q = s.prompt.lastIndexOf(TOKENS.QUERY);
  const asked = new Set(s.prompt.slice(q + 1, -1));
  const bound = [...bindings(s.prompt, taskVocab().valueBase)].filter(([k]) => !asked.has(k));
  for (let j = bound.length - 1; j > 0; j--) {
    const x = Math.floor(r() * (j + 1));
    [bound[j], bound[x]] = [bound[x], bound[j]];
  }
  for (const [k, v] of bound) {
    if (row.length + 5 > S) break;
    answers.push(row.length + 3, row.length + 4);
    row.push(TOKENS.QUERY, k, TOKENS.ANSWER, v, TOKENS.EOS);
  }
  row.length = Math.min(row.length, S);
  while (row.length < S) row.push(TOKENS.PAD);
  return { row, answers: answers.filter((j) => j < S) };
}

async function main(): Promise<void> {
  const args = scriptArgs("pretrain_teacher", HELP, {
    hidden: { type: "string", default: "64" },
    layers: { type: "string", default: "2" },
    heads: { type: "string", default: "4" },
    "kv-heads": { type: "string", default: "2" },
    intermediate: { type: "string" },
    seq: { type: "string", default: "128" },
    "min-length": { type: "string", default: "48" },
    batch: { type: "string", default: "16" },
    steps: { type: "string", default: "300" },
    "max-seconds": { type: "string" },
    "log-every": { type: "string", default: "10" },
    lr: { type: "string", default: "3e-3" },
    warmup: { type: "string", default: "30" },
    "weight-decay": { type: "string", default: "0.01" },
    clip: { type: "string", default: "1" },
    tasks: { type: "string", default: "kv,vartrack,sum" },
    "eval-length": { type: "string" },
    "eval-samples": { type: "string", default: "32" },
    "eval-every": { type: "string", default: "100" },
    "embed-std": { type: "string", default: "0.1" },
    seed: { type: "string", default: "1" },
    out: { type: "string" },
    json: { type: "string" },
    "show-rows": { type: "string" },
    curriculum: { type: "string", default: "0.3" },
    "out-scale": { type: "string" },
    loss: { type: "string", default: "answers" },
  });
  const a = args.parsed.values as Record<string, string | undefined>;
  const num = (k: string): number => {
    const x = Number(a[k]);
    if (!Number.isFinite(x)) args.fail(`--${k} must be a number, got "${a[k]}"`);
    return x;
  };
  const H = num("hidden"), L = num("layers"), Hq = num("heads"), Hkv = num("kv-heads");
  const S = num("seq"), B = num("batch"), steps = num("steps"), lr = num("lr");
  const warmup = num("warmup"), seed = num("seed"), minLen = num("min-length");
  const maxSeconds = a["max-seconds"] ? num("max-seconds") : Infinity;
  if (a.loss !== "answers" && a.loss !== "all") {
    args.fail(`--loss must be one of answers, all, got "${a.loss}"`);
  }
  const answersOnly = a.loss === "answers";
  const curriculum = Math.max(1e-9, num("curriculum"));
  const evalLen = a["eval-length"] ? num("eval-length") : S - 16;
  const tasks = a.tasks!.split(",").map((t) => t.trim()).filter(Boolean);
  tasks.forEach((t) => taskOf(t, 64));
  const vocab = taskVocab();
  if (a["show-rows"]) {
    for (let i = 0; i < num("show-rows"); i++) {
      const { row, answers } = trainingRow(tasks, S, minLen, seed, i);
      console.log(renderTokens(row, vocab) + `\n  answers at ${answers.join(",")}\n`);
    }
    return;
  }
  const gpu = await getGpu();
  const config = parseConfig({
    model_type: "qwen3",
    hidden_size: H,
    num_hidden_layers: L,
    num_attention_heads: Hq,
    num_key_value_heads: Hkv,
    head_dim: H / Hq,
    intermediate_size: a.intermediate ? num("intermediate") : 3 * H,
    vocab_size: vocab.size,
    max_position_embeddings: Math.max(4096, S),
    rope_theta: 10000,
    tie_word_embeddings: true,
    bos_token_id: TOKENS.BOS,
    eos_token_id: TOKENS.EOS,
    torch_dtype: "float32",
  }, "pretrain_teacher");
  const model = createModel(gpu, config, { seed, dtype: "f32" });
  // the default embedding init (std 1) makes tied logits ~√H: start them near uniform
  const normal = rng(seed + 99), std = num("embed-std");
  for (const c of model.weights.embed.chunks) {
    c.tensor.write(
      Float32Array.from(
        { length: c.tensor.size },
        () => std * Math.sqrt(-2 * Math.log(1 - normal())) * Math.cos(2 * Math.PI * normal()),
      ),
    );
  }
  const outScale = a["out-scale"] ? num("out-scale") : std / Math.sqrt(2 * L);
  for (const lw of model.weights.layers) {
    for (const t of [lw.oProj, lw.downProj]) {
      t.write((await t.toArray() as Float32Array).map((x) => x * outScale));
    }
  }
  const params = trainableParameters(model, "all");
  const names = [...params.keys()];
  const opt = new AdamW(names.map((n) => params.get(n)!), {
    lr,
    betas: [0.9, 0.95],
    eps: 1e-8,
    weightDecay: num("weight-decay"),
  });
  const nParams = [...params.values()].reduce((s, t) => s + t.size, 0);
  console.log(
    `teacher: hidden ${H}, layers ${L}, heads ${Hq}/${Hkv}, ${
      (nParams / 1e6).toFixed(2)
    }M params, ` +
      `rows ${B}×${S}, ${steps} steps, tasks ${tasks.join(",")}, eval at L=${evalLen}`,
  );
  const log: Record<string, unknown>[] = [];
  const evaluate = async (step: number) => {
    const acc: Record<string, number> = {};
    for (const t of tasks) {
      const task = taskOf(t, evalLen);
      const r = await evaluateTask(model, task, {
        samples: num("eval-samples"),
        seed: 1_000_000 + seed,
        policy: "dense",
        batchRows: 16,
      });
      acc[taskName(task)] = r.accuracy;
    }
    console.log(
      `  eval @ ${step}: ` + Object.entries(acc).map(([k, x]) => `${k} ${x.toFixed(3)}`).join("  "),
    );
    log.push({ step, accuracy: acc });
  };
  const t0 = performance.now();
  let tLast = t0, evalSecs = 0, done = 0, sinceLog = 0;
  const logEvery = num("log-every");
  for (let step = 0; step < steps; step++) {
    // training time only: evaluations do not count against --max-seconds
    const frac = Math.max(
      step / steps,
      (performance.now() - t0 - evalSecs * 1000) / 1000 / maxSeconds,
    );
    if (frac >= 1) break;
    // curriculum: the longest prompt grows from --min-length to S − 16 over the first part
    const maxLen = Math.round(minLen + (S - 16 - minLen) * Math.min(1, frac / curriculum));
    const ids = new Int32Array(B * S);
    const weights = new Float32Array(B * S).fill(answersOnly ? 0 : 1);
    for (let b = 0; b < B; b++) {
      const { row, answers } = trainingRow(tasks, S, minLen, seed, step * B + b, maxLen);
      ids.set(row, b * S);
      for (const j of answers) weights[b * S + j - 1] = 1; // the target at j − 1 is token j
    }
    const out = forwardBackward(model, {
      ids,
      batch: B,
      seqLen: S,
      objective: "lm",
      trainable: "all",
      targetWeights: weights,
    });
    const grads = names.map((n) => out.grads.get(n)!);
    using norm = clipGradients(grads, num("clip"));
    const w = warmup / steps; // warm-up as a fraction of the run
    const progress = frac < w
      ? Math.min(1, (step + 1) / warmup)
      : 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * (frac - w) / (1 - w)));
    opt.step(grads, lr * progress);
    sinceLog++;
    if ((step + 1) % logEvery === 0 || step === steps - 1) {
      const [loss] = await out.loss.toArray();
      const [gn] = await norm.toArray();
      const now = performance.now(), dt = (now - tLast) / 1000;
      const n = sinceLog;
      tLast = now;
      sinceLog = 0;
      console.log(
        `step ${step + 1}/${steps}  loss ${loss.toFixed(4)}  |g| ${gn.toFixed(3)}  lr ${
          (lr * progress).toExponential(2)
        }  ${(n / dt).toFixed(2)} steps/s  ${(n * B * S / dt).toFixed(0)} tok/s`,
      );
      log.push({ step: step + 1, loss, gradNorm: gn, stepsPerSec: n / dt });
    }
    out.dispose();
    done = step + 1;
    const ev = num("eval-every");
    if (ev > 0 && done % ev === 0 && done !== steps) {
      const e0 = performance.now();
      await evaluate(done);
      evalSecs += (performance.now() - e0) / 1000;
      tLast += performance.now() - e0; // the speed line excludes the evaluation
    }
  }
  const secs = (performance.now() - t0) / 1000 - evalSecs;
  console.log(
    `trained ${done} steps in ${secs.toFixed(1)} s (evaluations excluded): ${
      (done / secs).toFixed(2)
    } steps/s, ${(done * B * S / secs).toFixed(0)} tok/s`,
  );
  await evaluate(done);
  if (a.out) {
    await saveModel(model, a.out);
    console.log(`saved ${a.out}`);
  }
  if (a.json) {
    await writeTextFileAtomic(
      a.json,
      JSON.stringify({ args: a, params: nParams, seconds: secs, log }, null, 2) + "\n",
    );
  }
  opt.dispose();
  model.dispose();
}

if (import.meta.main) await main();
