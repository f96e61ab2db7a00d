/**
 * A readable CPU reference of the DMS decoder (Qwen3 / Llama), float64, plain
 * loops: the model-level oracle that the GPU model and the conformance runner
 * are checked against. nanoGPT style: one small helper per step, a shape
 * comment on every tensor line, no tricks.
 *
 * Three modes, all over whole sequences (positions 0..S−1):
 * - {@linkcode teacherForward}: plain causal attention (SPEC §3 teacher mode:
 *   DMS logits forced off). The borrowed query neuron is still zeroed, as (R)
 *   does (SPEC §1a).
 * - {@linkcode trainForward}: SPEC §1 decision logits (borrowed query neuron or
 *   separate adapter; "head"/"layer" granularity), §4 Gumbel-sigmoid with given
 *   noise `[L,B,Hkv,S]`, §3 soft mask, §6 frac_closed / dms_loss, model cr.
 * - {@linkcode inferenceForward}: hard decisions and the §5.1 visibility rule
 *   for a whole token sequence at once. Because prefill + decode is equivalent
 *   to the dense rule (SPEC §5.3), this is the oracle for a prefill of
 *   `promptLen` tokens followed by one decode step per remaining token; it also
 *   derives the cache observables (retained mask, cache lengths, `get_cr`) as
 *   stored in the golden vectors (conformance README, "Compression ratio").
 *
 * {@linkcode attentionOnlyReference} is the bare DMS attention (SPEC §5.1 with
 * key padding) used for the attention-only conformance cases.
 *
 * Index conventions come from `src/dms/oracle.ts` (shift by one, visibility,
 * retained counts, get_cr, gumbel-sigmoid); this file does not re-derive them.
 *
 * @example Teacher and DMS inference logits of a conformance model
 * ```ts
 * import { loadConfig } from "./config.ts";
 * import { openSafetensors } from "../io/safetensors.ts";
 * import { inferenceForward, loadReferenceModel, teacherForward, type WeightTensor } from "./reference.ts";
 * const dir = "../shared/conformance/B1_infer_qneuron_head";
 * const config = await loadConfig(dir);
 * using file = await openSafetensors(`${dir}/weights.safetensors`);
 * const weights = new Map<string, WeightTensor>();
 * for (const name of file.tensors.keys()) {
 *   const t = await file.read(name);
 *   weights.set(name, { shape: t.shape, data: t.data as Float32Array });
 * }
 * const model = loadReferenceModel(config, weights);
 * const { logits } = teacherForward(model, [[1, 2, 3]]); // [1, 3, V]
 * const dms = inferenceForward(model, [1, 2, 3, 4, 5, 6, 7, 8], 5); // prefill 5, decode 3
 * console.log(dms.cacheLen, dms.crCache); // [8, L, Hkv], [8]
 * ```
 *
 * @module
 */

import {
  alphaFromQueryNeuron,
  compressionRatioGetCr,
  gumbelSigmoid,
  hardDecision,
  trainFarBias,
  visibilityMask,
} from "../dms/oracle.ts";
import type { ModelConfig } from "./config.ts";

/** One weight tensor as read from safetensors: shape and float32 data. */
export interface WeightTensor {
  /** Dimensions, outermost first. */
  readonly shape: readonly number[];
  /** Row-major values. */
  readonly data: Float32Array;
}

/** Weights by HF name (`model.layers.0.self_attn.q_proj.weight`, ...). */
export type WeightMap = ReadonlyMap<string, WeightTensor>;

/** A linear layer `y = x @ w^T + b`, float64. */
export interface Linear {
  /** `[out, in]` */
  readonly w: Float64Array;
  /** `[out]` or null */
  readonly b: Float64Array | null;
  /** Output features. */
  readonly out: number;
  /** Input features. */
  readonly in: number;
}

/** One decoder layer's parameters, float64. */
export interface ReferenceLayer {
  /** `[H]` */
  readonly inputNorm: Float64Array;
  /** `q_proj`: H → Hq·D */
  readonly qProj: Linear;
  /** `k_proj`: H → Hkv·D */
  readonly kProj: Linear;
  /** `v_proj`: H → Hkv·D */
  readonly vProj: Linear;
  /** `o_proj`: Hq·D → H */
  readonly oProj: Linear;
  /** `[D]`, Qwen3 only */
  readonly qNorm: Float64Array | null;
  /** `[D]`, Qwen3 only */
  readonly kNorm: Float64Array | null;
  /** `[H]` */
  readonly postNorm: Float64Array;
  /** `mlp.gate_proj`: H → I */
  readonly gate: Linear;
  /** `mlp.up_proj`: H → I */
  readonly up: Linear;
  /** `mlp.down_proj`: I → H */
  readonly down: Linear;
  /** `[H]`, adapter variant only (`dms_proj_alpha_norm`) */
  readonly alphaNorm: Float64Array | null;
  /** `[Hkv, H]`, adapter variant only (`dms_proj_alpha`) */
  readonly alphaProj: Linear | null;
}

/** A model ready for the reference: config plus float64 weights. */
export interface ReferenceModel {
  /** The normalised config the weights were checked against. */
  readonly config: ModelConfig;
  /** `[V, H]` */
  readonly embed: Float64Array;
  /** One entry per decoder layer. */
  readonly layers: readonly ReferenceLayer[];
  /** `[H]` */
  readonly norm: Float64Array;
  /** `[V, H]` (the embedding when tied) */
  readonly lmHead: Linear;
  /** `[D/2]` RoPE inverse frequencies (scaling applied). */
  readonly invFreq: Float64Array;
  /** HF `attention_scaling` multiplying cos/sin (1 for default/linear/llama3). */
  readonly ropeAttentionScaling: number;
}

/** Options of {@linkcode loadReferenceModel}. */
export interface LoadOptions {
  /** Overrides the computed RoPE inverse frequencies `[D/2]` (e.g. a scaling type not built in). */
  invFreq?: ArrayLike<number>;
  /** Overrides HF `attention_scaling` (default 1). */
  ropeAttentionScaling?: number;
}

/**
 * Converts HF-named float32 weights to a float64 {@linkcode ReferenceModel},
 * checking every name and shape.
 *
 * @throws {RangeError} naming the tensor, the expected and the actual shape.
 */
export function loadReferenceModel(
  config: ModelConfig,
  weights: WeightMap,
  options: LoadOptions = {},
): ReferenceModel {
  const c = config;
  const H = c.hiddenSize, D = c.headDim, Hq = c.numHeads, Hkv = c.numKvHeads;
  const I = c.intermediateSize, V = c.vocabSize;
  if (c.modelType !== "qwen3" && c.modelType !== "llama") {
    throw new RangeError(`reference: model_type must be "qwen3" or "llama", got "${c.modelType}"`);
  }
  if (c.hiddenAct !== "silu") {
    throw new RangeError(`reference: hidden_act must be "silu", got "${c.hiddenAct}"`);
  }
  if (Hq % Hkv !== 0) {
    throw new RangeError(
      `reference: num_attention_heads ${Hq} is not a multiple of num_key_value_heads ${Hkv}`,
    );
  }
  if (D % 2 !== 0) throw new RangeError(`reference: head_dim must be even, got ${D}`);
  const qkNorm = c.modelType === "qwen3";

  const get = (name: string, shape: number[]): Float64Array => {
    const t = weights.get(name);
    if (!t) {
      throw new RangeError(`reference: missing weight ${name} (expected [${shape.join(", ")}])`);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new RangeError(
        `reference: ${name}: expected [${shape.join(", ")}], got [${t.shape.join(", ")}]`,
      );
    }
    return Float64Array.from(t.data);
  };
  // biases exist iff the config says so: attention_bias (q/k/v/o and the DMS adapter, SPEC §1b),
  // mlp_bias (Llama MLP)
  const linear = (prefix: string, out: number, inp: number, bias: boolean): Linear => ({
    w: get(`${prefix}.weight`, [out, inp]),
    b: bias ? get(`${prefix}.bias`, [out]) : null,
    out,
    in: inp,
  });
  const ab = c.attentionBias, mb = c.mlpBias;

  const layers: ReferenceLayer[] = [];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}`;
    layers.push({
      inputNorm: get(`${p}.input_layernorm.weight`, [H]),
      qProj: linear(`${p}.self_attn.q_proj`, Hq * D, H, ab),
      kProj: linear(`${p}.self_attn.k_proj`, Hkv * D, H, ab),
      vProj: linear(`${p}.self_attn.v_proj`, Hkv * D, H, ab),
      oProj: linear(`${p}.self_attn.o_proj`, H, Hq * D, ab),
      qNorm: qkNorm ? get(`${p}.self_attn.q_norm.weight`, [D]) : null,
      kNorm: qkNorm ? get(`${p}.self_attn.k_norm.weight`, [D]) : null,
      postNorm: get(`${p}.post_attention_layernorm.weight`, [H]),
      gate: linear(`${p}.mlp.gate_proj`, I, H, mb),
      up: linear(`${p}.mlp.up_proj`, I, H, mb),
      down: linear(`${p}.mlp.down_proj`, H, I, mb),
      alphaNorm: c.dms.separateAlpha ? get(`${p}.self_attn.dms_proj_alpha_norm.weight`, [H]) : null,
      alphaProj: c.dms.separateAlpha ? linear(`${p}.self_attn.dms_proj_alpha`, Hkv, H, ab) : null,
    });
  }
  const embed = get("model.embed_tokens.weight", [V, H]);
  let lmHead: Linear;
  if (weights.has("lm_head.weight")) lmHead = linear("lm_head", V, H, false);
  else if (c.tieWordEmbeddings) lmHead = { w: embed, b: null, out: V, in: H };
  else {throw new RangeError(
      "reference: missing weight lm_head.weight (tie_word_embeddings is false)",
    );}

  let invFreq: Float64Array;
  if (options.invFreq) {
    if (options.invFreq.length !== D / 2) {
      throw new RangeError(
        `reference: invFreq: expected [${D / 2}], got [${options.invFreq.length}]`,
      );
    }
    invFreq = Float64Array.from(options.invFreq);
  } else {
    invFreq = ropeInvFreq(c);
  }
  return {
    config: c,
    embed,
    layers,
    norm: get("model.norm.weight", [H]),
    lmHead,
    invFreq,
    ropeAttentionScaling: options.ropeAttentionScaling ?? 1,
  };
}

/**
 * HF RoPE inverse frequencies `[D/2]`: `theta^(−2i/D)`, then the rope scaling
 * (`linear`: ÷factor; `llama3`: the wavelength-banded rule of
 * `_compute_llama3_parameters`).
 *
 * Other scalings: pass `LoadOptions.invFreq`.
 */
export function ropeInvFreq(config: ModelConfig): Float64Array {
  const D = config.headDim;
  const inv = new Float64Array(D / 2); // [D/2]
  for (let i = 0; i < D / 2; i++) inv[i] = 1 / Math.pow(config.ropeTheta, (2 * i) / D);
  const rs = config.ropeScaling;
  if (!rs) return inv;
  if (rs.type === "linear") return inv.map((f) => f / rs.factor);
  const { factor, lowFreqFactor: low, highFreqFactor: high } = rs; // llama3
  const oldCtx = rs.originalMaxPositionEmbeddings;
  const lowWavelen = oldCtx / low, highWavelen = oldCtx / high;
  return inv.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highWavelen) return f; // high frequency: unchanged
    if (wavelen > lowWavelen) return f / factor; // low frequency: scaled
    const smooth = (oldCtx / wavelen - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f; // medium: interpolated
  });
}

// ---------------------------------------------------------------------------
// Small helpers (all float64, row-major)

/** `y = x @ W^T + b`. x:[N, in] -> y:[N, out] */
function linear(x: Float64Array, N: number, lin: Linear): Float64Array {
  const y = new Float64Array(N * lin.out); // [N, out]
  for (let n = 0; n < N; n++) {
    for (let o = 0; o < lin.out; o++) {
      let s = lin.b ? lin.b[o] : 0;
      const xr = n * lin.in, wr = o * lin.in;
      for (let i = 0; i < lin.in; i++) s += x[xr + i] * lin.w[wr + i];
      y[n * lin.out + o] = s;
    }
  }
  return y;
}

/** `w * x / sqrt(mean(x²) + eps)` over the last dim. x:[N, C] -> [N, C] */
function rmsNorm(
  x: Float64Array,
  N: number,
  C: number,
  w: Float64Array,
  eps: number,
): Float64Array {
  const y = new Float64Array(N * C); // [N, C]
  for (let n = 0; n < N; n++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss += x[n * C + c] ** 2;
    const r = 1 / Math.sqrt(ss / C + eps);
    for (let c = 0; c < C; c++) y[n * C + c] = w[c] * x[n * C + c] * r;
  }
  return y;
}

/** `[S, nh*D]` -> `[nh, S, D]` (heads first). */
function headsFirst(x: Float64Array, S: number, nh: number, D: number): Float64Array {
  const y = new Float64Array(nh * S * D); // [nh, S, D]
  for (let t = 0; t < S; t++) {
    for (let h = 0; h < nh; h++) {
      for (let d = 0; d < D; d++) y[(h * S + t) * D + d] = x[t * nh * D + h * D + d];
    }
  }
  return y;
}

/** `[nh, S, D]` -> `[S, nh*D]` (concatenated heads, HF order). */
function headsLast(x: Float64Array, S: number, nh: number, D: number): Float64Array {
  const y = new Float64Array(S * nh * D); // [S, nh*D]
  for (let h = 0; h < nh; h++) {
    for (let t = 0; t < S; t++) {
      for (let d = 0; d < D; d++) y[t * nh * D + h * D + d] = x[(h * S + t) * D + d];
    }
  }
  return y;
}

/**
 * HF rotate-half RoPE in place at positions 0..S−1:
 * `x' = x·cos + rotate_half(x)·sin`, `rotate_half(x) = cat(−x[D/2:], x[:D/2])`.
 * x:[nh, S, D]
 */
function applyRope(x: Float64Array, nh: number, S: number, D: number, model: ReferenceModel): void {
  const half = D / 2, sc = model.ropeAttentionScaling;
  for (let h = 0; h < nh; h++) {
    for (let t = 0; t < S; t++) {
      const r = (h * S + t) * D;
      for (let i = 0; i < half; i++) {
        const ang = t * model.invFreq[i];
        const cos = Math.cos(ang) * sc, sin = Math.sin(ang) * sc;
        const a = x[r + i], b = x[r + i + half];
        x[r + i] = a * cos - b * sin;
        x[r + i + half] = b * cos + a * sin;
      }
    }
  }
}

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/**
 * Attention over one KV page shared by G query heads, dense softmax.
 * `score(t, j, s)` turns the scaled dot product `s` into the final score;
 * `-Infinity` hides the key. A query with no visible key gets 0.
 * q:[G, S, D] k:[S, D] v:[S, D] -> out:[G, S, D]
 */
export function attendPage(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  G: number,
  S: number,
  D: number,
  scale: number,
  score: (t: number, j: number, s: number) => number,
): Float64Array {
  const out = new Float64Array(G * S * D); // [G, S, D]
  const w = new Float64Array(S); // [S] scores of one query row
  for (let g = 0; g < G; g++) {
    for (let t = 0; t < S; t++) {
      const qr = (g * S + t) * D;
      let max = -Infinity;
      for (let j = 0; j < S; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[qr + d] * k[j * D + d];
        w[j] = score(t, j, s * scale);
        if (w[j] > max) max = w[j];
      }
      if (max === -Infinity) continue; // nothing visible (padded query): output 0
      let sum = 0;
      for (let j = 0; j < S; j++) sum += w[j] = Math.exp(w[j] - max);
      for (let j = 0; j < S; j++) {
        const p = w[j] / sum;
        if (p === 0) continue;
        for (let d = 0; d < D; d++) out[qr + d] += p * v[j * D + d];
      }
    }
  }
  return out;
}

/** View of head h of x:[nh, S, C] -> [S, C]. */
function head(x: Float64Array, h: number, S: number, C: number): Float64Array {
  return x.subarray(h * S * C, (h + 1) * S * C);
}

// ---------------------------------------------------------------------------
// The decoder over one sequence

type Mode = "teacher" | "train" | "inference";

/** Everything one sequence's forward produces (per layer arrays stacked). */
interface SequenceTrace {
  /** `[S, V]` */
  logits: Float64Array;
  /** `[L, S, H]` hidden state after each decoder layer */
  layerOut: Float64Array;
  /** `[L, Hkv, S]` alpha per head (not broadcast) */
  alphaRaw: Float64Array;
  /** `[L, Hkv, S]` alpha after the "layer" broadcast */
  alpha: Float64Array;
  /** `[L, Hkv, S]` train: z = (alpha + noise)/tau after broadcast */
  z: Float64Array;
  /** `[L, Hkv, S]` train: σ(z) */
  p: Float64Array;
  /** `[L, Hkv, S]` train: 1[z > 0]; inference: 1[alpha > 0] (after broadcast) */
  decisions: Int32Array;
  /** `[L, Hq, S, D]` query fed to attention (after norm, RoPE, zeroing) */
  q: Float64Array;
  /** `[L, Hkv, S, D]` key after norm and RoPE */
  k: Float64Array;
  /** `[L, Hkv, S, D]` value */
  v: Float64Array;
}

/**
 * Runs the decoder over one token sequence.
 * noise:[L, Hkv, S] (train mode only).
 */
function forwardSequence(
  model: ReferenceModel,
  ids: ArrayLike<number>,
  mode: Mode,
  noise?: Float64Array,
): SequenceTrace {
  const c = model.config;
  const S = ids.length, H = c.hiddenSize, V = c.vocabSize, L = c.numLayers;
  const Hq = c.numHeads, Hkv = c.numKvHeads, D = c.headDim, G = Hq / Hkv;
  const W = c.dms.window, eps = c.rmsNormEps, scale = 1 / Math.sqrt(D);
  // SPEC §1 (a): only a DMS model borrows (and zeroes) a query channel; a plain model keeps all
  const borrowNeuron = c.isDms && !c.dms.separateAlpha;
  const tr: SequenceTrace = {
    logits: new Float64Array(S * V), // [S, V]
    layerOut: new Float64Array(L * S * H), // [L, S, H]
    alphaRaw: new Float64Array(L * Hkv * S), // [L, Hkv, S]
    alpha: new Float64Array(L * Hkv * S), // [L, Hkv, S]
    z: new Float64Array(L * Hkv * S), // [L, Hkv, S]
    p: new Float64Array(L * Hkv * S), // [L, Hkv, S]
    decisions: new Int32Array(L * Hkv * S), // [L, Hkv, S]
    q: new Float64Array(L * Hq * S * D), // [L, Hq, S, D]
    k: new Float64Array(L * Hkv * S * D), // [L, Hkv, S, D]
    v: new Float64Array(L * Hkv * S * D), // [L, Hkv, S, D]
  };

  let h = new Float64Array(S * H); // [S, H] residual stream
  for (let t = 0; t < S; t++) {
    const id = ids[t];
    if (!Number.isInteger(id) || id < 0 || id >= V) {
      throw new RangeError(`reference: token id ${id} at position ${t} is outside [0, ${V})`);
    }
    h.set(model.embed.subarray(id * H, (id + 1) * H), t * H);
  }

  for (let l = 0; l < L; l++) {
    const lw = model.layers[l];
    const x = rmsNorm(h, S, H, lw.inputNorm, eps); // [S, H]
    const q = headsFirst(linear(x, S, lw.qProj), S, Hq, D); // [Hq, S, D]
    const k = headsFirst(linear(x, S, lw.kProj), S, Hkv, D); // [Hkv, S, D]
    const v = headsFirst(linear(x, S, lw.vProj), S, Hkv, D); // [Hkv, S, D]
    const qn = lw.qNorm ? rmsNorm(q, Hq * S, D, lw.qNorm, eps) : q; // [Hq, S, D]
    const kn = lw.kNorm ? rmsNorm(k, Hkv * S, D, lw.kNorm, eps) : k; // [Hkv, S, D]

    // SPEC §1: decision logits, one per (KV head, position)
    const alphaRaw = tr.alphaRaw.subarray(l * Hkv * S, (l + 1) * Hkv * S); // [Hkv, S]
    if (lw.alphaProj && lw.alphaNorm) {
      // (b) adapter on the residual stream *before* input_layernorm
      const xa = rmsNorm(h, S, H, lw.alphaNorm, eps); // [S, H]
      const a = linear(xa, S, lw.alphaProj); // [S, Hkv]
      for (let g = 0; g < Hkv; g++) {
        for (let t = 0; t < S; t++) {
          alphaRaw[g * S + t] = a[t * Hkv + g] * c.dms.alphaScale - c.dms.alphaOffset;
        }
      }
    } else if (borrowNeuron) {
      // (a) borrowed neuron: channel D−1 of the first query head of each group, after q_norm
      for (let g = 0; g < Hkv; g++) {
        for (let t = 0; t < S; t++) {
          const idx = ((g * G) * S + t) * D + D - 1;
          alphaRaw[g * S + t] = alphaFromQueryNeuron(qn[idx], c.dms.alphaScale, c.dms.alphaOffset);
          qn[idx] = 0; // zeroed before RoPE ...
        }
      }
    }
    // dms_disable_eviction forces the logits to −1000, like teacher mode in (R) (SPEC §3); a plain
    // (non-DMS) model has no decision logits at all: it never evicts
    if (c.dms.disableEviction || !c.isDms) alphaRaw.fill(-1000);
    applyRope(qn, Hq, S, D, model);
    applyRope(kn, Hkv, S, D, model);
    if (borrowNeuron) {
      for (let g = 0; g < Hkv; g++) {
        for (let t = 0; t < S; t++) qn[((g * G) * S + t) * D + D - 1] = 0; // ... and again after
      }
    }
    const alpha = tr.alpha.subarray(l * Hkv * S, (l + 1) * Hkv * S); // [Hkv, S]
    for (let g = 0; g < Hkv; g++) {
      const src = c.dms.alphaPer === "layer" ? 0 : g; // "layer": head 0's logit for every head
      alpha.set(alphaRaw.subarray(src * S, (src + 1) * S), g * S);
    }
    tr.q.set(qn, l * Hq * S * D);
    tr.k.set(kn, l * Hkv * S * D);
    tr.v.set(v, l * Hkv * S * D);

    // attention, one KV page at a time
    const att = new Float64Array(Hq * S * D); // [Hq, S, D]
    for (let g = 0; g < Hkv; g++) {
      let score: (t: number, j: number, s: number) => number;
      if (mode === "teacher") {
        score = (t, j, s) => (j <= t ? s : -Infinity);
      } else if (mode === "train") {
        // SPEC §4: z = (alpha + noise)/tau; "layer" uses head 0's logit and head 0's noise
        const src = c.dms.alphaPer === "layer" ? 0 : g;
        const z = tr.z.subarray((l * Hkv + g) * S, (l * Hkv + g + 1) * S); // [S]
        for (let t = 0; t < S; t++) {
          const n = noise![(l * Hkv + src) * S + t];
          const gs = gumbelSigmoid(alphaRaw[src * S + t], n, c.dms.tau);
          z[t] = gs.z;
          tr.p[(l * Hkv + g) * S + t] = gs.p;
          tr.decisions[(l * Hkv + g) * S + t] = gs.hard;
        }
        // SPEC §3: −50000 above the diagonal, s within W, s + log σ(−z[j+1]) beyond
        const far = trainFarBias(z); // [S]
        score = (t, j, s) => (j > t ? -50000 : t - j <= W ? s : s + far[j]);
      } else {
        // SPEC §5.1: hard decisions, dense visibility
        const d = tr.decisions.subarray((l * Hkv + g) * S, (l * Hkv + g + 1) * S); // [S]
        for (let t = 0; t < S; t++) d[t] = hardDecision(alpha[g * S + t]);
        const vis = visibilityMask(d, W); // [S, S]
        score = (t, j, s) => (vis[t * S + j] ? s : -Infinity);
      }
      const qg = qn.subarray(g * G * S * D, (g + 1) * G * S * D); // [G, S, D]
      const out = attendPage(qg, head(kn, g, S, D), head(v, g, S, D), G, S, D, scale, score); // [G, S, D]
      att.set(out, g * G * S * D);
    }
    const o = linear(headsLast(att, S, Hq, D), S, lw.oProj); // [S, H]
    const h1 = h.map((x, i) => x + o[i]); // [S, H]
    const x2 = rmsNorm(h1, S, H, lw.postNorm, eps); // [S, H]
    const gate = linear(x2, S, lw.gate); // [S, I]
    const up = linear(x2, S, lw.up); // [S, I]
    const m = linear(gate.map((a, i) => silu(a) * up[i]), S, lw.down); // [S, H]
    h = h1.map((x, i) => x + m[i]); // [S, H]
    tr.layerOut.set(h, l * S * H);
  }
  const hn = rmsNorm(h, S, H, model.norm, eps); // [S, H]
  tr.logits = linear(hn, S, model.lmHead); // [S, V]
  return tr;
}

// ---------------------------------------------------------------------------
// Public modes

/** Output of {@linkcode teacherForward}. */
export interface TeacherOutput {
  /** `[B, S, V]` */
  logits: Float64Array;
  /** `[L, B, S, H]` hidden state after each decoder layer (before the final norm) */
  layerOut: Float64Array;
}

/**
 * Teacher mode: plain causal attention, no DMS decisions (SPEC §3, §6).
 *
 * @param ids B sequences of equal length S.
 */
export function teacherForward(
  model: ReferenceModel,
  ids: readonly ArrayLike<number>[],
): TeacherOutput {
  const { B, S } = batchShape(ids);
  const c = model.config, L = c.numLayers, H = c.hiddenSize, V = c.vocabSize;
  const logits = new Float64Array(B * S * V); // [B, S, V]
  const layerOut = new Float64Array(L * B * S * H); // [L, B, S, H]
  for (let b = 0; b < B; b++) {
    const tr = forwardSequence(model, ids[b], "teacher");
    logits.set(tr.logits, b * S * V);
    for (let l = 0; l < L; l++) {
      layerOut.set(tr.layerOut.subarray(l * S * H, (l + 1) * S * H), (l * B + b) * S * H);
    }
  }
  return { logits, layerOut };
}

/** Output of {@linkcode trainForward}; names follow the conformance tensors. */
export interface TrainOutput {
  /** `[B, S, V]` train-mode logits */
  logits: Float64Array;
  /** `[L, B, S, H]` */
  layerOut: Float64Array;
  /** `[L, B, Hkv, S]` alpha per head (not broadcast) */
  decisionLogitsRaw: Float64Array;
  /** `[L, B, Hkv, S]` z = (alpha + noise)/tau (after the "layer" broadcast) */
  decisionLogitsNoisy: Float64Array;
  /** `[L, B, Hkv, S]` σ(z) */
  decisionProbs: Float64Array;
  /** `[L, B, Hkv, S]` 1[z > 0] */
  decisionsHard: Int32Array;
  /** `[L, B, Hkv, S]` forward value of `hard − stopgrad(p) + p` (= hard) */
  decisionsStraightThrough: Float64Array;
  /** `[B]` mean over layers of the mean over (heads, positions) of the ST decisions */
  fracClosed: Float64Array;
  /** mean over b of `fracClosed` */
  dmsFracClosed: number;
  /** `mean_b max(0, target − fracClosed[b])` (SPEC §6) */
  dmsLoss: number;
  /** logged training CR `1 / max(1 − dmsFracClosed, 1e−6)` (SPEC §5.4) */
  cr: number;
}

/**
 * Train mode (SPEC §1, §3, §4, §6): Gumbel-sigmoid decisions from the given
 * noise, soft far-window mask, compression loss.
 *
 * @param ids B sequences of equal length S.
 * @param noise `[L, B, Hkv, S]` logistic noise.
 * @param targetFracToClose α* of the schedule (SPEC §6).
 */
export function trainForward(
  model: ReferenceModel,
  ids: readonly ArrayLike<number>[],
  noise: ArrayLike<number>,
  targetFracToClose: number,
): TrainOutput {
  const { B, S } = batchShape(ids);
  const c = model.config, L = c.numLayers, H = c.hiddenSize, V = c.vocabSize;
  const Hkv = c.numKvHeads;
  if (noise.length !== L * B * Hkv * S) {
    throw new RangeError(
      `trainForward: noise: expected [${L}, ${B}, ${Hkv}, ${S}] (${
        L * B * Hkv * S
      } values), got ${noise.length}`,
    );
  }
  const n = L * B * Hkv * S;
  const out: TrainOutput = {
    logits: new Float64Array(B * S * V), // [B, S, V]
    layerOut: new Float64Array(L * B * S * H), // [L, B, S, H]
    decisionLogitsRaw: new Float64Array(n), // [L, B, Hkv, S]
    decisionLogitsNoisy: new Float64Array(n), // [L, B, Hkv, S]
    decisionProbs: new Float64Array(n), // [L, B, Hkv, S]
    decisionsHard: new Int32Array(n), // [L, B, Hkv, S]
    decisionsStraightThrough: new Float64Array(n), // [L, B, Hkv, S]
    fracClosed: new Float64Array(B), // [B]
    dmsFracClosed: 0,
    dmsLoss: 0,
    cr: 0,
  };
  for (let b = 0; b < B; b++) {
    const nb = new Float64Array(L * Hkv * S); // [L, Hkv, S] this sequence's noise
    for (let l = 0; l < L; l++) {
      for (let i = 0; i < Hkv * S; i++) nb[l * Hkv * S + i] = noise[(l * B + b) * Hkv * S + i];
    }
    const tr = forwardSequence(model, ids[b], "train", nb);
    out.logits.set(tr.logits, b * S * V);
    let frac = 0;
    for (let l = 0; l < L; l++) {
      out.layerOut.set(tr.layerOut.subarray(l * S * H, (l + 1) * S * H), (l * B + b) * S * H);
      const src = l * Hkv * S, dst = (l * B + b) * Hkv * S, len = Hkv * S;
      out.decisionLogitsRaw.set(tr.alphaRaw.subarray(src, src + len), dst);
      out.decisionLogitsNoisy.set(tr.z.subarray(src, src + len), dst);
      out.decisionProbs.set(tr.p.subarray(src, src + len), dst);
      out.decisionsHard.set(tr.decisions.subarray(src, src + len), dst);
      let layerSum = 0;
      for (let i = 0; i < len; i++) {
        // straight-through forward value: hard − p + p (SPEC §4)
        const st = tr.decisions[src + i] - tr.p[src + i] + tr.p[src + i];
        out.decisionsStraightThrough[dst + i] = st;
        layerSum += st;
      }
      frac += layerSum / len / L;
    }
    out.fracClosed[b] = frac;
  }
  let sum = 0, loss = 0;
  for (let b = 0; b < B; b++) {
    sum += out.fracClosed[b];
    loss += Math.max(0, targetFracToClose - out.fracClosed[b]);
  }
  out.dmsFracClosed = sum / B;
  out.dmsLoss = loss / B;
  out.cr = 1 / Math.max(1 - out.dmsFracClosed, 1e-6);
  return out;
}

/** Output of {@linkcode inferenceForward}; names follow the conformance tensors. */
export interface InferenceOutput {
  /** `[T, V]` row t = logits after token t */
  logits: Float64Array;
  /** `[L, T, H]` */
  layerOut: Float64Array;
  /** `[L, Hkv, T]` alpha (after the "layer" broadcast) */
  decisionLogits: Float64Array;
  /** `[L, Hkv, T]` `1[alpha > 0]`, unshifted: d[t] marks key t−1 */
  decisions: Int32Array;
  /** `[L, Hq, T, D]` query fed to attention (after q_norm, RoPE, zeroing) */
  q: Float64Array;
  /** `[L, Hkv, T, D]` key after k_norm and RoPE */
  k: Float64Array;
  /** `[L, Hkv, T, D]` */
  v: Float64Array;
  /** `[T, L, Hkv, T]` keys visible to query t (SPEC §5.1) */
  retainedMask: Int32Array;
  /** `[T, L, Hkv, T]` the same for rows t ≥ P−1 (observable in a cache), −1 before */
  cacheRetainedMask: Int32Array;
  /** `[T, L, Hkv]` keys held after token t for t ≥ P−1, −1 before */
  cacheLen: Int32Array;
  /** `[T]` the model's reported cr: get_cr for decode rows t ≥ P, NaN before */
  crModel: Float64Array;
  /** `[T]` the cache's `get_cr()`: see {@linkcode inferenceForward} */
  crCache: Float64Array;
  /** `[T, L]` the cache's per-layer `get_cr` */
  crCachePerLayer: Float64Array;
}

/**
 * Inference (SPEC §5): hard decisions and the dense §5.1 visibility rule over
 * the whole sequence, standing for a prefill of `promptLen` tokens followed by
 * one decode step per further token (teacher-forced).
 *
 * Cache observables, as the golden vectors store them (conformance README,
 * "Compression ratio"), with P = promptLen and Wc = W + 1:
 * - decode rows t ≥ P: `cacheLen[t]` = retained count, `crCache[t]` =
 *   `1 / mean(cacheLen[t] / (t+1))` (oracle `compressionRatioGetCr`), `crModel[t]`
 *   the same;
 * - row P−1 (cache still in PREFILL mode): `get_cr` counts only the paged part,
 *   i.e. `cacheLen − min(Wc, P)` per page over P tokens; while the paged part
 *   is uninitialised (P ≤ Wc: nothing older than the window) it returns 1.0
 *   and the per-layer values are NaN; `crModel` is NaN (the model returns None);
 * - rows t < P−1: −1 lengths and mask rows, NaN ratios.
 *
 * Edge case not covered by the vectors: P > Wc with every older key evicted in
 * some layer (paged part initialised but empty) gives `Infinity` here.
 */
export function inferenceForward(
  model: ReferenceModel,
  ids: ArrayLike<number>,
  promptLen: number,
): InferenceOutput {
  const T = ids.length, P = promptLen;
  if (!Number.isInteger(P) || P < 1 || P > T) {
    throw new RangeError(`inferenceForward: promptLen must be an integer in [1, ${T}], got ${P}`);
  }
  const c = model.config, L = c.numLayers, Hkv = c.numKvHeads, W = c.dms.window;
  const Wc = W + 1;
  const tr = forwardSequence(model, ids, "inference");

  const retainedMask = new Int32Array(T * L * Hkv * T); // [T, L, Hkv, T]
  const cacheLen = new Int32Array(T * L * Hkv).fill(-1); // [T, L, Hkv]
  const retained = new Int32Array(T * L * Hkv); // [T, L, Hkv]
  for (let l = 0; l < L; l++) {
    for (let g = 0; g < Hkv; g++) {
      const d = tr.decisions.subarray((l * Hkv + g) * T, (l * Hkv + g + 1) * T); // [T]
      const vis = visibilityMask(d, W); // [T, T]
      for (let t = 0; t < T; t++) {
        let count = 0;
        for (let j = 0; j <= t; j++) {
          retainedMask[((t * L + l) * Hkv + g) * T + j] = vis[t * T + j];
          count += vis[t * T + j];
        }
        retained[(t * L + l) * Hkv + g] = count;
        if (t >= P - 1) cacheLen[(t * L + l) * Hkv + g] = count;
      }
    }
  }
  const cacheRetainedMask = retainedMask.slice(); // [T, L, Hkv, T]
  cacheRetainedMask.fill(-1, 0, Math.max(P - 1, 0) * L * Hkv * T);

  const crModel = new Float64Array(T).fill(NaN); // [T]
  const crCache = new Float64Array(T).fill(NaN); // [T]
  const crCachePerLayer = new Float64Array(T * L).fill(NaN); // [T, L]
  const lengthsAt = (t: number, minus: number): number[][] => {
    const out: number[][] = [];
    for (let l = 0; l < L; l++) {
      const row: number[] = [];
      for (let g = 0; g < Hkv; g++) row.push(retained[(t * L + l) * Hkv + g] - minus);
      out.push(row);
    }
    return out;
  };
  // row P−1: only the paged part (keys older than the last Wc) is counted
  if (P <= Wc) {
    crCache[P - 1] = 1; // paged part uninitialised; per-layer values stay NaN
  } else {
    const paged = lengthsAt(P - 1, Wc); // [L][Hkv]
    crCache[P - 1] = compressionRatioGetCr(paged, P);
    for (let l = 0; l < L; l++) {
      crCachePerLayer[(P - 1) * L + l] = compressionRatioGetCr([paged[l]], P);
    }
  }
  // decode rows: everything lives in the paged cache
  for (let t = P; t < T; t++) {
    const lens = lengthsAt(t, 0); // [L][Hkv]
    crCache[t] = crModel[t] = compressionRatioGetCr(lens, t + 1);
    for (let l = 0; l < L; l++) {
      crCachePerLayer[t * L + l] = compressionRatioGetCr([lens[l]], t + 1);
    }
  }

  return {
    logits: tr.logits,
    layerOut: tr.layerOut,
    decisionLogits: tr.alpha,
    decisions: tr.decisions,
    q: tr.q,
    k: tr.k,
    v: tr.v,
    retainedMask,
    cacheRetainedMask,
    cacheLen,
    crModel,
    crCache,
    crCachePerLayer,
  };
}

// ---------------------------------------------------------------------------
// Attention only (no model)

/** Output of {@linkcode attentionOnlyReference}. */
export interface AttentionOnlyOutput {
  /** `[B, Hkv, T, G, D]` attention output per position; 0 at padded queries */
  out: Float64Array;
  /** `[T, B, Hkv, T]` keys visible to query t (SPEC §5.1 with key padding) */
  retainedMask: Int32Array;
  /** `[T, B, Hkv]` number of visible keys (= cache length after token t) */
  retainedCount: Int32Array;
}

/**
 * DMS attention with given decisions and key padding, dense (SPEC §5.1):
 * query t sees key j iff j ≤ t, `keyMask[j] = 1` and (`d[j+1] = 0` or
 * t − j ≤ W). Prefill chunks and decode steps give the same numbers (SPEC
 * §5.3), so one dense pass covers both.
 *
 * @param q `[B*Hkv, T, G, D]` (flash layout: row b·Hkv+h, query head h·G+i)
 * @param k `[B, Hkv, T, D]`
 * @param v `[B, Hkv, T, D]`
 * @param decisions `[B, Hkv, T]` hard decisions, unshifted
 * @param keyMask `[B, T]` 1 = token, 0 = (left) padding
 * @param window W (the cache window minus one)
 */
export function attentionOnlyReference(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  decisions: ArrayLike<number>,
  keyMask: ArrayLike<number>,
  dims: { B: number; Hkv: number; G: number; T: number; D: number },
  window: number,
  scale: number,
): AttentionOnlyOutput {
  const { B, Hkv, G, T, D } = dims;
  const expect = (name: string, arr: ArrayLike<number>, shape: number[]): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    if (arr.length !== n) {
      throw new RangeError(
        `attentionOnlyReference: ${name}: expected [${
          shape.join(", ")
        }] (${n} values), got ${arr.length}`,
      );
    }
  };
  expect("q", q, [B * Hkv, T, G, D]);
  expect("k", k, [B, Hkv, T, D]);
  expect("v", v, [B, Hkv, T, D]);
  expect("decisions", decisions, [B, Hkv, T]);
  expect("keyMask", keyMask, [B, T]);
  const out = new Float64Array(B * Hkv * T * G * D); // [B, Hkv, T, G, D]
  const retainedMask = new Int32Array(T * B * Hkv * T); // [T, B, Hkv, T]
  const retainedCount = new Int32Array(T * B * Hkv); // [T, B, Hkv]
  for (let b = 0; b < B; b++) {
    const km = Array.from({ length: T }, (_, j) => keyMask[b * T + j]); // [T]
    for (let h = 0; h < Hkv; h++) {
      const p = b * Hkv + h;
      const d = Array.from({ length: T }, (_, t) => decisions[p * T + t]); // [T]
      const vis = visibilityMask(d, window, km); // [T, T]
      // q:[T, G, D] -> [G, T, D]
      const qp = new Float64Array(G * T * D); // [G, T, D]
      for (let t = 0; t < T; t++) {
        for (let g = 0; g < G; g++) {
          for (let e = 0; e < D; e++) qp[(g * T + t) * D + e] = q[((p * T + t) * G + g) * D + e];
        }
      }
      const kp = Float64Array.from({ length: T * D }, (_, i) => k[p * T * D + i]); // [T, D]
      const vp = Float64Array.from({ length: T * D }, (_, i) => v[p * T * D + i]); // [T, D]
      const o = attendPage(
        qp,
        kp,
        vp,
        G,
        T,
        D,
        scale,
        (t, j, s) => (vis[t * T + j] ? s : -Infinity),
      ); // [G, T, D]
      for (let t = 0; t < T; t++) {
        for (let g = 0; g < G; g++) {
          for (let e = 0; e < D; e++) out[((p * T + t) * G + g) * D + e] = o[(g * T + t) * D + e];
        }
        let count = 0;
        for (let j = 0; j <= t; j++) {
          retainedMask[((t * B + b) * Hkv + h) * T + j] = vis[t * T + j];
          count += vis[t * T + j];
        }
        retainedCount[(t * B + b) * Hkv + h] = count;
      }
    }
  }
  return { out, retainedMask, retainedCount };
}

function batchShape(ids: readonly ArrayLike<number>[]): { B: number; S: number } {
  const B = ids.length;
  if (B < 1) throw new RangeError("reference: need at least one sequence (B >= 1)");
  const S = ids[0].length;
  for (let b = 0; b < B; b++) {
    if (ids[b].length !== S) {
      throw new RangeError(
        `reference: sequence ${b} has length ${ids[b].length}, expected ${S} like sequence 0`,
      );
    }
  }
  if (S < 1) throw new RangeError("reference: sequences must hold at least one token");
  return { B, S };
}
