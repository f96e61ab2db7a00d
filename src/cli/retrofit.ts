/**
 * `dms retrofit`: teaches a teacher model to evict (`retrofit()`, src/train/retrofit.ts; SPEC
 * §6) on a text file (through the teacher's tokenizer) or a synthetic task, writing checkpoints
 * (`<out>/checkpoint-<step>`, each a model folder `dms generate` / `dms eval` load) and
 * resuming from the latest one with `--resume`. A progress bar shows the steps on a terminal.
 *
 * @module
 */

import { generateTask, taskVocab } from "../eval/tasks.ts";
import { getGpu } from "../gpu/device.ts";
import { loadTokenizer } from "../io/tokenizer.ts";
import { loadModel } from "../model/model.ts";
import { type BatchSource, generatorSource, textFileSource } from "../train/data.ts";
import { retrofit } from "../train/retrofit.ts";
import { type Command, int, num, parse, str, UsageError, write } from "./_command.ts";
import { checkSource, resolveFolder, SOURCE_FLAGS, SOURCE_USAGE } from "./_model.ts";
import { progress } from "./_progress.ts";
import { TASK_FLAGS, TASK_USAGE, taskFrom } from "./_task.ts";

const USAGE =
  `usage: dms retrofit TEACHER|--hub OWNER/NAME --out DIR (--text FILE | --task KIND ...) [options]

Retrofits DMS into a model (adapters trained by distillation from the model itself, SPEC §6).

${SOURCE_USAGE.replaceAll("MODEL    ", "TEACHER  ")}
  --out DIR           checkpoint folder: DIR/checkpoint-<step> (config.json + model.safetensors
                      + trainer and optimizer state); the last one is the student
  --resume            continue from the latest checkpoint in --out
  --text FILE         training text (paragraphs split at blank lines), encoded with the
                      teacher's tokenizer.json
  --seq-len N         tokens per packed row of --text (default 512)
${TASK_USAGE}
                      (with --task, each row is one sample: prompt + answer)
  --steps N           optimizer steps (default 100)
  --batch N           rows per step (default 4)
  --window W          DMS window of the student (default: the teacher's dms_window_size or 512)
  --block-size B      paged-cache block size (default: the teacher's, lowered below W); <= W
  --lr X              learning rate (default 1e-4)
  --final-cr X        the schedule's final compression target, >= 1 (default 8)
  --final-step N      step at which the target reaches --final-cr (default 70% of --steps)
  --checkpoint-every N  steps between checkpoints (default: only at the end)
  --seed S            seed of the data and the Gumbel noise (default 42)
  --debug             stack traces on failures`;

async function run(args: string[]): Promise<number> {
  const p = parse(args, {
    ...SOURCE_FLAGS,
    ...TASK_FLAGS,
    out: { type: "string" },
    resume: { type: "boolean" },
    text: { type: "string" },
    "seq-len": { type: "string" },
    steps: { type: "string" },
    batch: { type: "string" },
    window: { type: "string" },
    "block-size": { type: "string" },
    lr: { type: "string" },
    "final-cr": { type: "string" },
    "final-step": { type: "string" },
    "checkpoint-every": { type: "string" },
    seed: { type: "string" },
  }, 1);
  const src = checkSource(p);
  const out = str(p, "out");
  if (out === undefined) throw new UsageError("--out DIR is required");
  const text = str(p, "text");
  if (text !== undefined && str(p, "task") !== undefined) {
    throw new UsageError("give --text FILE or --task KIND, not both");
  }
  const task = text === undefined ? taskFrom(p) : undefined;
  const steps = int(p, "steps", 100, 1);
  const batch = int(p, "batch", 4, 1);
  const seqLen = int(p, "seq-len", 512, 2);
  const window = str(p, "window") === undefined ? undefined : int(p, "window", 0, 1);
  const blockSize = str(p, "block-size") === undefined ? undefined : int(p, "block-size", 0, 1);
  if (window !== undefined && blockSize !== undefined && window < blockSize) {
    throw new UsageError(`--window ${window} is below the block size ${blockSize} (--block-size)`);
  }
  const lr = num(p, "lr", 1e-4, Number.MIN_VALUE, 1);
  const finalCr = num(p, "final-cr", 8, 1);
  const finalStep = int(p, "final-step", Math.max(1, Math.round(0.7 * steps)), 1);
  const checkpointEvery = int(p, "checkpoint-every", 0, 0);
  const seed = int(p, "seed", 42, 0, 2 ** 32 - 1);

  const folder = await resolveFolder(src);
  const model = await loadModel(await getGpu(), folder, { dtype: "f32" });
  try {
    // without --block-size, studentConfig lowers the teacher's block below the window itself
    const w = window ?? model.config.dms.window;
    if (blockSize !== undefined && w < blockSize) {
      throw new UsageError(
        `the window ${w} (the teacher's dms_window_size; pass --window) is below the block ` +
          `size ${blockSize} (--block-size)`,
      );
    }
    let data: BatchSource;
    if (text !== undefined) {
      if (!(await Deno.stat(`${folder}/tokenizer.json`).catch(() => null))) {
        throw new Error(
          `${folder}/tokenizer.json: missing, so --text cannot be encoded (use --task)`,
        );
      }
      const tok = await loadTokenizer(folder);
      data = await textFileSource(text, tok, { batch, seqLen, seed });
    } else {
      const t = task!, V = taskVocab().size;
      if (model.config.vocabSize < V) {
        throw new RangeError(
          `${folder}/config.json: vocab_size ${model.config.vocabSize} is smaller than the task ` +
            `vocabulary (${V})`,
        );
      }
      const answer = generateTask(t, { count: 1, seed }).map((s) => s.answer.length)[0];
      data = generatorSource((i) => {
        const [s] = generateTask(t, { count: 1, seed: seed + 17, offset: i });
        return [...s.prompt, ...s.answer];
      }, { batch, seqLen: t.length + answer, seed });
    }
    const bar = progress("retrofit", steps);
    let last = "";
    try {
      const r = await retrofit(model, data, {
        steps,
        schedule: { initialCr: 1, finalCr, finalStep },
        window,
        blockSize,
        lr,
        seed,
        checkpointDir: out,
        checkpointEvery,
        resume: p.values.resume === true,
        logEvery: 1,
        onStep: (s) => {
          last = `step ${s.step + 1}/${steps}: KL ${s.lossDistill.toFixed(4)}, closed ` +
            `${s.fracClosed.toFixed(3)} (target CR ${s.targetCr.toFixed(2)})`;
          bar.update(s.step + 1, `KL ${s.lossDistill.toFixed(4)} CR* ${s.targetCr.toFixed(2)}`);
        },
      });
      bar.end();
      await write(
        `${last || `nothing to do: already at step ${r.steps}`}\nstudent: ${r.checkpoint}\n`,
      );
    } finally {
      bar.end();
    }
    return 0;
  } finally {
    model.dispose();
  }
}

/** `dms retrofit`. */
export const retrofitCommand: Command = {
  name: "retrofit",
  summary: "retrofit DMS into a model (distillation, SPEC §6), with checkpoints and --resume",
  usage: USAGE,
  run,
};
