/**
 * `dms bench`: end-to-end generation speed of a model folder through `generate()`, dense vs a
 * chosen policy, on the same seeded random prompt. EOS is ignored so every run generates exactly
 * `--max-tokens` tokens; one untimed warm-up run per policy compiles the pipelines; the median
 * of `--runs` timed runs is reported (wall time, prefill included, as a user waits for it),
 * with the compression ratio and KV reads of the last run. For kernel-level numbers see
 * `deno task bench`.
 *
 * @module
 */

import { CACHE_POLICY_NAMES, type CachePolicyName, generate } from "../generate.ts";
import { getGpu } from "../gpu/device.ts";
import { loadModel } from "../model/model.ts";
import type { Transformer } from "../model/transformer.ts";
import type { KvCacheStats } from "../cache/kv_cache.ts";
import { type Command, int, oneOf, parse, write } from "./_command.ts";
import { checkSource, resolveFolder, SOURCE_FLAGS, SOURCE_USAGE } from "./_model.ts";
import { progress } from "./_progress.ts";

const USAGE = `usage: dms bench MODEL|--hub OWNER/NAME [options]

Tokens per second of generate() with the dense cache and with --policy, same prompt.

${SOURCE_USAGE}
  --policy NAME       compared with dense: ${CACHE_POLICY_NAMES.join(", ")} (default dms)
  --prompt-len N      prompt tokens, seeded random ids (default 64)
  --max-tokens N      generated tokens per run, EOS ignored (default 64)
  --runs N            timed runs per policy, median reported (default 3)
  --json              print the rows as JSON
  --debug             stack traces on failures`;

/** One policy's measurement. */
export interface BenchRow {
  /** Cache policy. */
  policy: CachePolicyName;
  /** Median tokens per second (generated tokens / wall seconds, prefill included). */
  tokensPerSecond: number;
  /** Wall seconds of every timed run. */
  seconds: number[];
  /** The cache's compression ratio at the end of the last run. */
  compressionRatio: number;
  /** KV entries read by decode attention in the last run. */
  kvReads: number;
}

async function once(
  model: Transformer,
  prompt: number[],
  maxTokens: number,
  policy: CachePolicyName,
): Promise<{ seconds: number; stats: KvCacheStats }> {
  const t0 = performance.now();
  const gen = generate(model, [prompt], { maxTokens, cache: policy, eosTokenIds: [] });
  let r = await gen.next();
  while (!r.done) r = await gen.next();
  return { seconds: (performance.now() - t0) / 1000, stats: r.value.stats };
}

async function run(args: string[]): Promise<number> {
  const p = parse(args, {
    ...SOURCE_FLAGS,
    policy: { type: "string" },
    "prompt-len": { type: "string" },
    "max-tokens": { type: "string" },
    runs: { type: "string" },
    json: { type: "boolean" },
  }, 1);
  const src = checkSource(p);
  const policy = oneOf(p, "policy", CACHE_POLICY_NAMES, "dms")!;
  const promptLen = int(p, "prompt-len", 64, 1);
  const maxTokens = int(p, "max-tokens", 64, 1);
  const runs = int(p, "runs", 3, 1);
  const folder = await resolveFolder(src);
  const model = await loadModel(await getGpu(), folder);
  try {
    let s = 12345; // xorshift: the same prompt for every policy and every run
    const V = model.config.vocabSize;
    const prompt = Array.from({ length: promptLen }, () => {
      s ^= s << 13, s ^= s >>> 17, s ^= s << 5;
      return (s >>> 0) % V;
    });
    const policies: CachePolicyName[] = policy === "dense" ? ["dense"] : ["dense", policy];
    const rows: BenchRow[] = [];
    const bar = progress("bench", policies.length * (runs + 1));
    let done = 0;
    try {
      for (const pol of policies) {
        await once(model, prompt, maxTokens, pol); // warm-up: pipelines compile
        bar.update(++done, `${pol} warm-up`);
        const secs: number[] = [];
        let stats: KvCacheStats | undefined;
        for (let i = 0; i < runs; i++) {
          const r = await once(model, prompt, maxTokens, pol);
          secs.push(r.seconds);
          stats = r.stats;
          bar.update(++done, pol);
        }
        const median = [...secs].sort((a, b) => a - b)[Math.floor(secs.length / 2)];
        rows.push({
          policy: pol,
          tokensPerSecond: maxTokens / median,
          seconds: secs,
          compressionRatio: stats!.compressionRatio,
          kvReads: stats!.readTokens,
        });
      }
    } finally {
      bar.end();
    }
    if (p.values.json) {
      await write(JSON.stringify({ folder, promptLen, maxTokens, runs, rows }) + "\n");
    } else {
      const lines = rows.map((r) =>
        `${r.policy.padEnd(8)} ${r.tokensPerSecond.toFixed(1).padStart(8)} tok/s  compression ` +
        `${r.compressionRatio.toFixed(2)}  KV reads ${r.kvReads}`
      );
      await write(
        `${folder}: ${promptLen}-token prompt, ${maxTokens} tokens, median of ${runs} ` +
          `(wall time, prefill included)\n${lines.join("\n")}\n`,
      );
    }
    return 0;
  } finally {
    model.dispose();
  }
}

/** `dms bench`. */
export const benchCommand: Command = {
  name: "bench",
  summary: "end-to-end tokens/s of generate(), dense vs a policy",
  usage: USAGE,
  run,
};
