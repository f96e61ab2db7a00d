/**
 * The DMS quickstart as a function, for the browser page (./main.ts) and for Deno alike: a tiny
 * random Qwen3-shaped model generates through the dense KV cache and through the DMS cache
 * (delayed eviction, window W); the result holds the tokens, the per-(layer, KV head) cache
 * lengths and the accounting of both, and `report` words it as the page shows it.
 *
 * It imports the package's own `mod.ts`, nothing browser- or Deno-specific: the page bundles it
 * with `deno bundle --platform browser` (see ./README.md), and `test/browser_test.ts` runs it in
 * Deno to check that the page printed the same numbers.
 *
 * @module
 */

import {
  createCacheFor,
  createModel,
  generate,
  type GenerateResult,
  getGpu,
  parseConfig,
} from "../../mod.ts";

/** Options of {@linkcode runQuickstart}. */
export interface QuickstartOptions {
  /** Tokens to generate after the 8-token prompt. Default 48. */
  tokens?: number;
  /** DMS window W. Default 16. */
  window?: number;
  /** Seed of the random weights. Default 7. */
  seed?: number;
}

/** The accounting of one cache after generation (a subset of `CacheStats`). */
export interface QuickstartStats {
  /** Positions seen per sequence. */
  tokensSeen: number;
  /** Live entries per [layer][KV head] of sequence 0. */
  lengths: number[][];
  /** KV entries read while decoding. */
  readTokens: number;
  /** Peak live KV entries. */
  peakTokens: number;
  /** Peak KV bytes. */
  peakBytes: number;
  /** `get_cr`: the reference's compression ratio. */
  compressionRatio: number;
}

/** What {@linkcode runQuickstart} returns: per policy, the tokens of sequence 0 and the stats. */
export interface QuickstartResult {
  /** The adapter's description. */
  device: string;
  /** W. */
  window: number;
  /** Generated tokens and accounting, dense and DMS. */
  dense: { tokens: number[]; stats: QuickstartStats };
  /** See `dense`. */
  dms: { tokens: number[]; stats: QuickstartStats };
}

/**
 * Runs the quickstart on the process's (or page's) WebGPU device.
 *
 * @example
 * ```ts ignore
 * const r = await runQuickstart({ tokens: 48 });
 * console.log(report(r).join("\n"));
 * ```
 */
export async function runQuickstart(options: QuickstartOptions = {}): Promise<QuickstartResult> {
  const W = options.window ?? 16, N = options.tokens ?? 48;
  const gpu = await getGpu();
  const config = parseConfig({
    model_type: "qwen3",
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    intermediate_size: 128,
    vocab_size: 256,
    max_position_embeddings: 4096,
    dms_window_size: W,
    dms_paged_attention_block_size: Math.max(1, Math.min(8, W - 1)),
    dms_alpha_scale: 100,
    dms_initial_alpha_offset: 0,
  }, "quickstart config");
  const model = createModel(gpu, config, { seed: options.seed ?? 7, dtype: "f32" });
  const prompt = [1, 17, 42, 99, 7, 3, 64, 200];
  const run = async (policy: "dense" | "dms") => {
    const cache = createCacheFor(model, 1, policy);
    try {
      const gen = generate(model, [prompt], { maxTokens: N, cache, eosTokenIds: [] });
      let r = await gen.next();
      while (!r.done) r = await gen.next();
      return summary(r.value);
    } finally {
      cache.dispose();
    }
  };
  try {
    const dense = await run("dense");
    const dms = await run("dms");
    return { device: gpu.description, window: W, dense, dms };
  } finally {
    model.dispose();
  }
}

function summary(r: GenerateResult): { tokens: number[]; stats: QuickstartStats } {
  const s = r.stats;
  return {
    tokens: [...r.tokens[0]],
    stats: {
      tokensSeen: s.tokensSeen,
      lengths: s.lengths.map((l) => [...l]),
      readTokens: s.readTokens,
      peakTokens: s.peakTokens,
      peakBytes: s.peakBytes,
      compressionRatio: s.compressionRatio,
    },
  };
}

/** The lines the page prints for a result: tokens, per-head lengths, reads, compression. */
export function report(r: QuickstartResult): string[] {
  const lines = [
    `device: ${r.device}`,
    `model: 2 layers, 2 KV heads, random weights, window W = ${r.window}`,
    `dense: ${r.dense.tokens.slice(0, 16).join(" ")} ...`,
    `dms:   ${r.dms.tokens.slice(0, 16).join(" ")} ...`,
    `after ${r.dense.stats.tokensSeen} tokens, live KV entries per (layer, KV head):`,
  ];
  r.dense.stats.lengths.forEach((_, l) => {
    lines.push(`  dense layer ${l}: ${r.dense.stats.lengths[l].join(" ")}`);
    lines.push(`  dms   layer ${l}: ${r.dms.stats.lengths[l].join(" ")}`);
  });
  const row = (name: string, a: number | string, b: number | string) =>
    lines.push(`${name.padEnd(34)}${String(a).padStart(10)}${String(b).padStart(10)}`);
  row("", "dense", "dms");
  row("KV entries read while decoding", r.dense.stats.readTokens, r.dms.stats.readTokens);
  row("peak KV entries", r.dense.stats.peakTokens, r.dms.stats.peakTokens);
  row("peak KV bytes", r.dense.stats.peakBytes, r.dms.stats.peakBytes);
  row(
    "compression ratio (get_cr)",
    r.dense.stats.compressionRatio.toFixed(2),
    r.dms.stats.compressionRatio.toFixed(2),
  );
  return lines;
}
