/**
 * The synthetic-task flags shared by `dms eval` and `dms retrofit --task`: kind, prompt length
 * and the kind's sizes, checked by generating one sample, so a task the generator refuses is a
 * usage error (exit 2) before any model is loaded.
 *
 * @module
 */

import { generateTask, type Task } from "../eval/tasks.ts";
import { int, oneLine, oneOf, type Parsed, UsageError } from "./_command.ts";

/** `parseArgs` options of a task. */
export const TASK_FLAGS = {
  task: { type: "string" },
  length: { type: "string" },
  pairs: { type: "string" },
  hops: { type: "string" },
  chains: { type: "string" },
  terms: { type: "string" },
} as const;

/** Usage lines of {@linkcode TASK_FLAGS}. */
export const TASK_USAGE =
  `  --task KIND         kv (key-value retrieval, default), vartrack (multi-hop chains),
                      sum (sum of retrieved values, written out step by step)
  --length N          prompt length in tokens (default 128)
  --pairs N           kv/sum: key-value pairs in the haystack (default 1 for kv, 2 for sum)
  --hops N            vartrack: statements per chain (default 2)
  --chains N          vartrack: chains, one asked for (default 1)
  --terms N           sum: values summed (default 2)`;

const KINDS = ["kv", "vartrack", "sum"] as const;

/**
 * The task the flags describe (the needle in the first half of the prompt for kv).
 *
 * @throws {UsageError} For a bad size, or a task the generator refuses (naming its field).
 */
export function taskFrom(p: Parsed): Task {
  const kind = oneOf(p, "task", KINDS, "kv")!;
  const length = int(p, "length", 128, 1);
  const task: Task = kind === "kv"
    ? { kind, length, pairs: int(p, "pairs", 1, 1), depth: [0, 0.5] }
    : kind === "vartrack"
    ? { kind, length, hops: int(p, "hops", 2, 1), chains: int(p, "chains", 1, 1) }
    : { kind, length, pairs: int(p, "pairs", 2, 1), terms: int(p, "terms", 2, 1) };
  try {
    generateTask(task, { count: 1, seed: 0 });
  } catch (e) {
    throw new UsageError(`task: ${oneLine(e)}`);
  }
  return task;
}
