/**
 * `dms inspect`: what a model folder holds — the config, the parameter count (summed over the
 * checkpoint's tensors, checked against the config's formula), the DMS settings, and the KV
 * bytes per token dense vs DMS at the configured compression ratio — after checking every
 * tensor's name, shape and dtype against the config (headers only: no weight is read).
 *
 * @module
 */

import { openCheckpoint } from "../io/safetensors.ts";
import { loadConfig, type ModelConfig, parameterCount } from "../model/config.ts";
import { checkCheckpoint } from "./_checkpoint_check.ts";
import { type Command, num, parse, str, write } from "./_command.ts";
import { checkSource, resolveFolder, SOURCE_FLAGS, SOURCE_USAGE } from "./_model.ts";

const USAGE = `usage: dms inspect MODEL|--hub OWNER/NAME [--cr X] [--json]

Checks every tensor of the checkpoint against config.json (name, shape, dtype) and prints the
config, the parameter count, the DMS settings and the KV-cache bytes per token.

${SOURCE_USAGE}
  --cr X              compression ratio for the DMS bytes (default: the config's dms_cr)
  --json              print the report as JSON
  --debug             stack traces on failures`;

/** KV-cache bytes per token of context. */
export interface KvBytes {
  /** Bytes per element of the cache (2 for f16/bf16 checkpoints, 4 for f32). */
  elementBytes: number;
  /** Dense: `layers · kvHeads · 2 (K and V) · headDim · elementBytes`. */
  dense: number;
  /** The compression ratio used, or null when neither `--cr` nor `dms_cr` gives one. */
  compressionRatio: number | null;
  /** Dense / CR: the average over a long sequence at that ratio, or null. */
  dms: number | null;
}

/** Bytes per token of the K and V entries for `cfg` (a CR ≥ 1, or null). */
export function kvBytesPerToken(cfg: ModelConfig, cr: number | null): KvBytes {
  const elementBytes = cfg.torchDtype === "float32" ? 4 : 2;
  const dense = cfg.numLayers * cfg.numKvHeads * 2 * cfg.headDim * elementBytes;
  return { elementBytes, dense, compressionRatio: cr, dms: cr === null ? null : dense / cr };
}

const human = (n: number) =>
  n >= 2 ** 30
    ? `${(n / 2 ** 30).toFixed(2)} GiB`
    : n >= 2 ** 20
    ? `${(n / 2 ** 20).toFixed(2)} MiB`
    : n >= 1024
    ? `${(n / 1024).toFixed(2)} KiB`
    : `${Number(n.toFixed(1))} B`;

async function run(args: string[]): Promise<number> {
  const p = parse(args, { ...SOURCE_FLAGS, cr: { type: "string" }, json: { type: "boolean" } }, 1);
  const src = checkSource(p);
  const crFlag = str(p, "cr") === undefined ? undefined : num(p, "cr", 1, 1);
  const folder = await resolveFolder(src);
  const cfg = await loadConfig(folder);
  using ckpt = await openCheckpoint(folder);
  const check = checkCheckpoint(ckpt.tensors, cfg, folder);
  const cr = crFlag ?? (cfg.isDms ? cfg.dms.compressionRatio : null);
  const kv = kvBytesPerToken(cfg, cr);
  const formula = parameterCount(cfg);
  if (check.problems.length === 0 && formula !== check.parameters) {
    check.problems.push(
      `${folder}: the tensors hold ${check.parameters} parameters, config.json implies ${formula}`,
    );
  }
  const d = cfg.dms;
  if (p.values.json) {
    await write(
      JSON.stringify({
        folder,
        modelType: cfg.modelType,
        config: {
          hiddenSize: cfg.hiddenSize,
          numLayers: cfg.numLayers,
          numHeads: cfg.numHeads,
          numKvHeads: cfg.numKvHeads,
          headDim: cfg.headDim,
          intermediateSize: cfg.intermediateSize,
          vocabSize: cfg.vocabSize,
          tieWordEmbeddings: cfg.tieWordEmbeddings,
          torchDtype: cfg.torchDtype,
        },
        parameters: check.parameters,
        tensors: ckpt.tensors.size,
        dtypes: check.dtypes,
        isDms: cfg.isDms,
        dms: cfg.isDms ? d : null,
        kvBytesPerToken: kv,
        problems: check.problems,
      }) + "\n",
    );
  } else {
    const lines = [
      `${folder}: ${cfg.modelType}, ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ` +
      `${cfg.numHeads} query / ${cfg.numKvHeads} KV heads of ${cfg.headDim}, MLP ` +
      `${cfg.intermediateSize}, vocabulary ${cfg.vocabSize}` +
      `${cfg.tieWordEmbeddings ? ", tied embeddings" : ""}, dtype ${cfg.torchDtype ?? "unset"}`,
      `parameters: ${check.parameters.toLocaleString("en-US")} in ${ckpt.tensors.size} tensors ` +
      `(${Object.entries(check.dtypes).map(([k, v]) => `${k} ${v}`).join(", ") || "none valid"})`,
      cfg.isDms
        ? `DMS: window ${d.window}, decisions ${d.separateAlpha ? "adapter" : "query neuron"} ` +
          `per ${d.alphaPer}, alpha scale ${d.alphaScale} offset ${d.alphaOffset}, tau ${d.tau}, ` +
          `block ${d.blockSize}, dms_cr ${d.compressionRatio ?? "unset"}` +
          `${d.disableEviction ? ", eviction disabled" : ""}`
        : "DMS: none (a plain checkpoint; retrofit it with dms retrofit)",
      `KV cache per token: dense ${human(kv.dense)} (${cfg.numLayers} layers x ${cfg.numKvHeads} ` +
      `KV heads x 2 x ${cfg.headDim} x ${kv.elementBytes} B)` +
      (kv.dms === null
        ? "; DMS: no ratio (dms_cr unset; pass --cr X)"
        : `; DMS at CR ${cr}: ${human(kv.dms)} on average over a long sequence`),
      check.problems.length
        ? `tensors: ${check.problems.length} problem(s):\n  ${check.problems.join("\n  ")}`
        : `tensors: all ${check.ok} match config.json (names, shapes, float dtypes)`,
    ];
    await write(lines.join("\n") + "\n");
  }
  if (check.problems.length) {
    throw new Error(
      `${check.problems.length} tensor problem(s); first: ${check.problems[0]}`,
    );
  }
  return 0;
}

/** `dms inspect`. */
export const inspectCommand: Command = {
  name: "inspect",
  summary: "check a checkpoint against its config; parameters, DMS settings, KV bytes per token",
  usage: USAGE,
  run,
};
