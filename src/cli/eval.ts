/**
 * `dms eval`: task accuracy through generation (`evaluateTask`, src/eval/task_eval.ts) with a
 * cache policy, optionally with self-consistency votes; prints the accuracy, the compression
 * ratio both ways, the KV reads and the peak of live KV entries.
 *
 * @module
 */

import { CACHE_POLICY_NAMES } from "../generate.ts";
import { getGpu } from "../gpu/device.ts";
import { evaluateTask } from "../eval/task_eval.ts";
import { taskName } from "../eval/tasks.ts";
import { loadModel } from "../model/model.ts";
import { type Command, int, num, oneOf, parse, str, write } from "./_command.ts";
import { checkSource, resolveFolder, SOURCE_FLAGS, SOURCE_USAGE } from "./_model.ts";
import { progress } from "./_progress.ts";
import { TASK_FLAGS, TASK_USAGE, taskFrom } from "./_task.ts";

const USAGE = `usage: dms eval MODEL|--hub OWNER/NAME [--task KIND ...] [options]

Grades a model on samples of a synthetic task (src/eval/tasks.ts) through a KV cache policy.

${SOURCE_USAGE}
${TASK_USAGE}
  --policy NAME       KV cache: ${CACHE_POLICY_NAMES.join(", ")} (default dense)
  --samples N         samples graded (default 32)
  --votes N           generations per prompt, majority vote (default 1)
  --temperature T     sampling temperature (default 0 with one vote, 1 with several)
  --seed S            seed of the samples and of the sampling (default 1)
  --json              print the result as JSON
  --debug             stack traces on failures`;

async function run(args: string[]): Promise<number> {
  const p = parse(args, {
    ...SOURCE_FLAGS,
    ...TASK_FLAGS,
    policy: { type: "string" },
    samples: { type: "string" },
    votes: { type: "string" },
    temperature: { type: "string" },
    seed: { type: "string" },
    json: { type: "boolean" },
  }, 1);
  const src = checkSource(p);
  const task = taskFrom(p);
  const policy = oneOf(p, "policy", CACHE_POLICY_NAMES, "dense")!;
  const samples = int(p, "samples", 32, 1);
  const votes = int(p, "votes", 1, 1);
  const temperature = str(p, "temperature") === undefined ? undefined : num(p, "temperature", 0, 0);
  const seed = int(p, "seed", 1, 0, 2 ** 32 - 1);
  const folder = await resolveFolder(src);
  const model = await loadModel(await getGpu(), folder);
  const bar = progress(`eval ${policy}`, samples);
  try {
    const r = await evaluateTask(model, task, {
      samples,
      seed,
      policy,
      votes,
      temperature,
      onProgress: (q) => bar.update(q.done, `accuracy ${(q.correct / q.done).toFixed(3)}`),
    });
    bar.end();
    if (p.values.json) {
      const { correct: _, predictions: __, batches: ___, ...summary } = r;
      await write(JSON.stringify({ folder, task, policy, votes, ...summary }) + "\n");
    } else {
      await write(
        `${folder}: ${taskName(task)}, policy ${policy}, ${samples} samples` +
          `${votes > 1 ? `, ${votes} votes` : ""}\n` +
          `accuracy ${r.accuracy.toFixed(3)}  compression ${r.compressionRatio.toFixed(2)} ` +
          `(dense/kept ${r.compressionRatioDenseOverKept.toFixed(2)})  KV reads ${r.kvReads}  ` +
          `peak KV ${r.peakKvTokens} entries\n`,
      );
    }
    return 0;
  } finally {
    bar.end();
    model.dispose();
  }
}

/** `dms eval`. */
export const evalCommand: Command = {
  name: "eval",
  summary: "task accuracy, compression and KV reads of a model with a cache policy",
  usage: USAGE,
  run,
};
