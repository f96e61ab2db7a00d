/**
 * Every tensor of a checkpoint against its config, without loading a weight: the names the
 * model needs ({@linkcode weightSpecs} plus the embedding, LM head and final norm), their
 * shapes, a float dtype, and no tensor the model would not use. The loader (`loadWeights`)
 * stops at the first tensor it needs; this reads only the headers and lists what it found.
 *
 * @module
 */

import type { TensorInfo } from "../io/safetensors.ts";
import type { ModelConfig } from "../model/config.ts";
import { weightSpecs } from "../model/weights.ts";

/** One expected tensor. */
export interface ExpectedTensor {
  /** Hugging Face name. */
  name: string;
  /** Shape the config implies. */
  shape: number[];
}

/** Every tensor `cfg` needs, in load order: layers, embedding, LM head unless tied, final norm. */
export function expectedTensors(cfg: ModelConfig): ExpectedTensor[] {
  const VH = [cfg.vocabSize, cfg.hiddenSize];
  return [
    ...weightSpecs(cfg).map((s) => ({ name: s.name, shape: s.shape })),
    { name: "model.embed_tokens.weight", shape: VH },
    ...(cfg.tieWordEmbeddings ? [] : [{ name: "lm_head.weight", shape: VH }]),
    { name: "model.norm.weight", shape: [cfg.hiddenSize] },
  ];
}

/** What the check found. */
export interface CheckpointCheck {
  /** Tensors checked (present with the right shape and a float dtype). */
  ok: number;
  /** Σ elements of the tensors the model uses. */
  parameters: number;
  /** Storage dtypes seen, with their element counts. */
  dtypes: Record<string, number>;
  /** One line per problem, each naming the tensor, the file and what was expected. */
  problems: string[];
}

const FLOAT = new Set(["F32", "F16", "BF16"]);
const fmt = (s: readonly number[]) => `[${s.join(", ")}]`;

/**
 * Checks `tensors` (a checkpoint's headers) against `cfg`.
 *
 * @param tensors Name → info (`Checkpoint.tensors`).
 * @param cfg The config.
 * @param source The folder, for missing-tensor messages.
 */
export function checkCheckpoint(
  tensors: ReadonlyMap<string, TensorInfo>,
  cfg: ModelConfig,
  source: string,
): CheckpointCheck {
  const problems: string[] = [], dtypes: Record<string, number> = {};
  const expected = expectedTensors(cfg);
  const names = new Set(expected.map((e) => e.name));
  let ok = 0, parameters = 0;
  for (const e of expected) {
    const t = tensors.get(e.name);
    if (!t) {
      problems.push(`${source}: tensor ${e.name} ${fmt(e.shape)} is missing`);
      continue;
    }
    const shapeOk = t.shape.length === e.shape.length && t.shape.every((d, i) => d === e.shape[i]);
    if (!shapeOk) {
      problems.push(
        `${t.file}: tensor ${e.name}: expected shape ${fmt(e.shape)}, got ${fmt(t.shape)}`,
      );
    }
    if (!FLOAT.has(t.dtype)) {
      problems.push(`${t.file}: tensor ${e.name}: expected dtype F32, F16 or BF16, got ${t.dtype}`);
    }
    if (!shapeOk || !FLOAT.has(t.dtype)) continue;
    const n = t.shape.reduce((a, b) => a * b, 1);
    ok++;
    parameters += n;
    dtypes[t.dtype] = (dtypes[t.dtype] ?? 0) + n;
  }
  for (const [name, t] of tensors) {
    if (names.has(name)) continue;
    const hint = name === "lm_head.weight" ? " (tie_word_embeddings is true)" : "";
    problems.push(`${t.file}: tensor ${name} ${fmt(t.shape)} is not part of the model${hint}`);
  }
  return { ok, parameters, dtypes, problems };
}
