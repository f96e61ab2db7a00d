/**
 * The decoder forward pass on the GPU: Qwen3 (per-head q_norm/k_norm) and
 * Llama (no qk-norm), GQA, tied or untied LM head, with DMS decisions coming
 * out of each attention layer (SPEC §1) and going into the KV cache.
 *
 * Modes:
 * - `teacher`: plain causal attention (DMS off; the borrowed query neuron is
 *   still zeroed, as the reference does in teacher mode);
 * - `train`: Gumbel-sigmoid decisions with given noise and the soft mask of
 *   SPEC §3 (dense attention with `farBias`);
 * - `inference`: hard decisions; attention runs through a `KvCache` (src/cache/kv_cache.ts:
 *   the paged DMS cache, or the dense cache for a model without DMS).
 *
 * One layer, as data flows (shapes per batch row, T new tokens):
 * ```
 * x:[T, H] → RMSNorm → q:[T, Hq, D] k,v:[T, Hkv, D] → q_norm/k_norm → alpha (neuron or adapter)
 *   → [Hq, T, D] → RoPE → (zero neuron) → attention / cache → [T, Hq·D] → o_proj → + x
 *   → RMSNorm → down(silu(gate)·up) → + x → (the next layer's RMSNorm)
 * ```
 * Each residual add comes with the norm that follows it (`linearNormOut`: o_proj with the
 * post-attention norm, down_proj with the next layer's input norm or the final norm), in the
 * projection's dispatch during decode; only layer 0 norms its input itself. In inference with
 * at most {@linkcode GEMV_NORM_DEFERRED_MAX_M} rows (decode of B ≤ 4), the norm is instead
 * deferred into the next projection ({@linkcode RmsNormPrologue}`.deferred`: its row scale
 * applied to the product's sums, the squares summed beside it), so neither projection waits on
 * a reduction over the whole row: the normed x is then not rounded to the storage dtype.
 *
 * @module
 */

import { fmtShape, Tensor } from "../tensor/tensor.ts";
import type { DType } from "../tensor/dtype.ts";
import type { FloatDType } from "../tensor/dtype.ts";
import { linear } from "../ops/matmul.ts";
import { rmsNorm } from "../ops/rmsnorm.ts";
import { headsNormRopeQK, type HeadsRopeQKResult } from "../dms/heads_rope_qk.ts";
import { decodeAppendTargetFor, headsNormRopeQKAppend } from "../dms/heads_rope_append.ts";
import { linearQkv } from "../ops/linear_qkv.ts";
import { linearSwiglu } from "../ops/linear_swiglu.ts";
import { linearNormOut } from "../ops/linear_norm_out.ts";
import { GEMV_NORM_DEFERRED_MAX_M, type RmsNormPrologue } from "../ops/gemv.ts";
import { attention } from "../ops/attention.ts";
import { toHeads } from "../ops/layout.ts";
import { embedding } from "../ops/embedding.ts";
import { cast } from "../ops/cast.ts";
import { inferDecisions, trainDecisions } from "../dms/decisions.ts";
import type { Gpu } from "../gpu/device.ts";
import type { KvCache } from "../cache/kv_cache.ts";
import { invFreqFor, type ModelConfig } from "./config.ts";
import type { ChunkedMatrix, ModelWeights } from "./weights.ts";

/** Forward mode, see the module doc. */
export type ForwardMode = "teacher" | "train" | "inference";

/** Names of the intermediate tensors {@linkcode ForwardOptions.capture} receives. */
export type CaptureName =
  | "q" // [B, Hq, T, D] after q_norm, RoPE and neuron zeroing
  | "k" // [B, Hkv, T, D] after k_norm and RoPE
  | "v" // [B, Hkv, T, D]
  | "layer_out" // [B, T, H]
  | "alpha" // [B, Hkv, T] inference: after the layer broadcast; train: per head
  | "decisions" // [B, Hkv, T] i32 (train: hard)
  | "z" // [B, Hkv, T] train
  | "prob" // [B, Hkv, T] train
  | "straight_through"; // [B, Hkv, T] train

/** Options of {@linkcode Transformer.forward}. */
export interface ForwardOptions {
  /** See {@linkcode ForwardMode}. */
  mode: ForwardMode;
  /** `[B, T]` i32 absolute positions (RoPE). */
  positions: Tensor<"i32">;
  /** Inference: the cache. */
  cache?: KvCache;
  /** Train: logistic noise per layer, each `[B, Hkv, T]` f32 (SPEC §4). */
  noise?: readonly Tensor<"f32">[];
  /** Inference: `[B, T]` row-major CPU data, 1 = token, 0 = left padding. */
  keyMask?: ArrayLike<number>;
  /** Which logits to compute: every position, the last one per row, or none. Default "all". */
  logits?: "all" | "last" | "none";
  /** Receives intermediate tensors; the callee owns (and must dispose) them. */
  capture?: (name: CaptureName, layer: number, t: Tensor) => void;
}

/** A decoder model on the GPU. */
export class Transformer {
  /** The configuration. */
  readonly config: ModelConfig;
  /** The weights. */
  readonly weights: ModelWeights;
  /** Compute dtype. */
  readonly dtype: FloatDType;
  /** The device. */
  readonly gpu: Gpu;
  readonly #invFreq: Tensor<"f32">;
  #zeros: Tensor<"i32"> | undefined;

  /** Wraps weights; see `createModel` / `loadModel` in `model.ts` for the usual entry points. */
  constructor(gpu: Gpu, config: ModelConfig, weights: ModelWeights, dtype: FloatDType) {
    this.gpu = gpu;
    this.config = config;
    this.weights = weights;
    this.dtype = dtype;
    this.#invFreq = Tensor.fromArray(gpu, invFreqFor(config), [config.headDim / 2], "f32");
  }

  /**
   * Runs the decoder over `ids:[B, T]` (i32).
   *
   * @returns `logits:[B, T, V]` (or `[B, 1, V]` with `logits: "last"`), f32; undefined with "none".
   */
  forward(ids: Tensor<"i32">, opts: ForwardOptions): Tensor<"f32"> | undefined {
    const cfg = this.config;
    if (ids.dtype !== "i32" || ids.rank !== 2) {
      throw new RangeError(
        `forward ids: expected i32 [B, T], got ${ids.dtype}${fmtShape(ids.shape)}`,
      );
    }
    const [B, T] = ids.shape;
    if (opts.positions.shape.join() !== [B, T].join()) {
      throw new RangeError(
        `forward positions: expected ${fmtShape([B, T])}, got ${fmtShape(opts.positions.shape)}`,
      );
    }
    if (opts.mode === "inference" && !opts.cache) {
      throw new TypeError("forward: inference mode needs a cache");
    }
    if (opts.mode === "train" && opts.noise?.length !== cfg.numLayers) {
      throw new RangeError(
        `forward: train mode needs noise for ${cfg.numLayers} layers, got ${
          opts.noise?.length ?? 0
        }`,
      );
    }
    let x: Tensor<FloatDType>;
    {
      using flat = ids.reshape([B * T]);
      x = this.#embed(flat);
    }
    // xn: x after the next norm (the next layer's input norm, after the last layer the final
    // norm), from the projection that made x (`linearNormOut`); none before layer 0, nor where
    // the next projection takes the norm deferred (`defer`).
    const defer = opts.mode === "inference" && B * T <= GEMV_NORM_DEFERRED_MAX_M;
    let xn: Tensor<FloatDType> | undefined;
    for (let l = 0; l < cfg.numLayers; l++) {
      const next = this.#layer(l, x, xn, B, T, opts, defer);
      x.dispose();
      xn?.dispose();
      x = next.y;
      xn = next.normed;
      if (opts.capture) opts.capture("layer_out", l, x.reshape([B, T, cfg.hiddenSize]));
    }
    const want = opts.logits ?? "all";
    if (want === "none") {
      x.dispose();
      xn?.dispose();
      return undefined;
    }
    // the final norm: made by the last layer, or deferred into the LM head, or here (no layer:
    // the embeddings)
    const finalNorm = { weight: this.weights.finalNorm, eps: cfg.rmsNormEps, deferred: true };
    let headNorm: RmsNormPrologue | undefined;
    let h: Tensor<FloatDType>, nT = T;
    if (xn) {
      h = xn;
      x.dispose();
    } else if (defer) {
      h = x;
      headNorm = finalNorm;
    } else {
      h = rmsNorm(x, finalNorm.weight, finalNorm.eps);
      x.dispose();
    }
    if (want === "last" && T > 1) {
      using idx = Tensor.fromArray(this.gpu, Array.from({ length: B }, (_, b) => b * T + T - 1), [
        B,
      ], "i32");
      const last = gatherRows(h, idx); // the norm is per row: the rows of the normed stream
      h.dispose();
      h = last;
      nT = 1;
    }
    const logits = this.#lmHead(h, headNorm);
    h.dispose();
    return as(logits, [B, nT, cfg.vocabSize]) as Tensor<"f32">;
  }

  /**
   * Frees the decoder's own buffers (the RoPE frequencies). The weights belong to whoever made
   * them: `Model.dispose()` (from `createModel` / `loadModel`) frees both.
   */
  dispose(): void {
    this.#invFreq.dispose();
    this.#zeros?.dispose();
    this.#zeros = undefined;
  }

  /**
   * All-zero decisions `[B, Hkv, T]` i32 (no eviction) for a model that makes none, kept from
   * step to step (caches only read them), so that a decode step clears no buffer (replayable:
   * src/gpu/step_trace.ts).
   */
  #noDecisions(shape: readonly number[]): Tensor<"i32"> {
    const z = this.#zeros;
    if (z && z.shape.length === shape.length && z.shape.every((d, i) => d === shape[i])) return z;
    z?.dispose();
    return (this.#zeros = Tensor.zeros(this.gpu, shape, "i32"));
  }

  #embed(ids: Tensor<"i32">): Tensor<FloatDType> {
    const cfg = this.config;
    const chunks = this.weights.embed.chunks;
    // One chunk: the op's own output (ids outside the table read as zeros, as below); no clear,
    // so a decode step records dispatches only (replayable: src/gpu/step_trace.ts).
    if (chunks.length === 1 && chunks[0].rowStart === 0) {
      return as(embedding(ids, chunks[0].tensor), [ids.size, cfg.hiddenSize]);
    }
    const out = Tensor.zeros(this.gpu, [ids.size, cfg.hiddenSize], this.dtype);
    for (const c of chunks) {
      embedding(ids, c.tensor, { rowOffset: c.rowStart, out });
    }
    return out;
  }

  /** Logits `[rows, V]` of `h:[rows, H]`, after `norm` when given (each chunk applies it). */
  #lmHead(h: Tensor<FloatDType>, norm?: RmsNormPrologue): Tensor<"f32"> {
    const m: ChunkedMatrix = this.weights.lmHead;
    const rows = h.shape[0];
    const out = Tensor.empty(this.gpu, [rows, m.rows], this.dtype);
    for (const c of m.chunks) linear(h, c.tensor, { out, outColumnOffset: c.rowStart, norm });
    if (this.dtype === "f32") return out as Tensor<"f32">;
    const f = cast(out, "f32") as Tensor<"f32">;
    out.dispose();
    return f;
  }

  /**
   * Layer l over the residual stream `x:[B·T, H]`; `xn` is `x` after this layer's input norm
   * when the previous layer made it. Returns the new stream and, unless `defer` (the norms go
   * into the projections that read them), it after the next norm (the next layer's input norm,
   * or the final norm after the last layer).
   */
  #layer(
    l: number,
    x: Tensor<FloatDType>,
    xn: Tensor<FloatDType> | undefined,
    B: number,
    T: number,
    opts: ForwardOptions,
    defer: boolean,
  ): { y: Tensor<FloatDType>; normed?: Tensor<FloatDType> } {
    const cfg = this.config, w = this.weights.layers[l];
    const Hq = cfg.numHeads, Hkv = cfg.numKvHeads, D = cfg.headDim, eps = cfg.rmsNormEps;
    const dms = cfg.dms;
    const cap = opts.capture;
    // SPEC §1 (a), §9.6: only a DMS model borrows (and zeroes) a query channel; a plain
    // checkpoint (no dms_* field) keeps every channel and never evicts
    const useNeuron = cfg.isDms && !dms.separateAlpha;

    // --- input RMSNorm (made by the previous layer's down_proj, else here) and the q, k, v
    // projections in one dispatch (decode): q:[B, T, Hq, D], k, v:[B, T, Hkv, D]
    const p = linearQkv(xn ?? x, w.qProj, w.kProj, w.vProj, {
      norm: xn ? undefined : { weight: w.inputNorm, eps, deferred: defer },
      qBias: w.qBias,
      kBias: w.kBias,
      vBias: w.vBias,
    });
    const q = as(p.q, [B, T, Hq, D]), k = as(p.k, [B, T, Hkv, D]), v = as(p.v, [B, T, Hkv, D]);

    // --- q_norm/k_norm, the borrowed neuron (SPEC §1a: read and zeroed before RoPE, zeroed
    // again after), the attention layout [B, H, T, D] and RoPE for q and k in one dispatch; in
    // inference with per-head alpha also the hard decisions (SPEC §2)
    const qkNorm = w.qNorm && w.kNorm;
    const decideHere = useNeuron && opts.mode === "inference" && !dms.disableEviction &&
      dms.alphaPer === "head";
    const heads = {
      qNorm: qkNorm ? { weight: w.qNorm!, eps } : undefined,
      kNorm: qkNorm ? { weight: w.kNorm!, eps } : undefined,
      neuron: useNeuron,
    };
    const decide = decideHere
      ? { alphaScale: dms.alphaScale, alphaOffset: dms.alphaOffset }
      : undefined;
    // A decode step: the q/k kernel stores the new entry too (`attend` then skips its append):
    // into a cache that appends in place (dense: no decisions taken), or into the slots the DMS
    // cache chose up front, with the step's decisions computed and applied in the kernel.
    const plainDecode = opts.mode === "inference" && !opts.capture && T === 1 && !opts.keyMask;
    const target = plainDecode && opts.cache
      ? decodeAppendTargetFor(opts.cache, this.gpu.limits, l, this.dtype, heads, decide)
      : undefined;
    const qk: HeadsRopeQKResult = target
      ? {
        q: headsNormRopeQKAppend(q, k, v, opts.positions, this.#invFreq, {
          ...heads,
          decide: target.slots ? decide : undefined,
        }, target),
        k: toHeads(k),
      }
      : headsNormRopeQK(q, k, opts.positions, this.#invFreq, { ...heads, decide });
    const qr = qk.q, kr = qk.k;
    const vh = toHeads(v);
    q.dispose();
    k.dispose();
    v.dispose();

    // --- DMS decision logit (SPEC §1): raw:[B, T, Hkv] f32
    let raw: Tensor<"f32"> | undefined = qk.raw;
    if (!useNeuron && opts.mode !== "teacher" && w.alphaProj && w.alphaNorm && !target) {
      const an = rmsNorm(x, w.alphaNorm, eps); // on the pre-norm residual
      const r = linear(an, w.alphaProj, { bias: w.alphaBias }); // [B·T, Hkv]
      an.dispose();
      const r32 = this.dtype === "f32" ? r : replace(r, cast(r, "f32"));
      raw = as(r32, [B, T, Hkv]) as Tensor<"f32">;
    }

    // --- attention
    let att: Tensor;
    if (opts.mode === "teacher" || (opts.mode === "train" && !raw)) {
      att = attention(qr, kr, vh);
      raw?.dispose();
    } else if (opts.mode === "train") {
      const dec = trainDecisions(raw!, opts.noise![l], {
        alphaScale: dms.alphaScale,
        alphaOffset: dms.alphaOffset,
        perLayer: dms.alphaPer === "layer",
        tau: dms.tau,
      });
      raw!.dispose();
      att = attention(qr, kr, vh, { window: dms.window, farBias: dec.farBias });
      emit(cap, l, {
        alpha: dec.alpha,
        z: dec.z,
        prob: dec.prob,
        decisions: dec.hard,
        straight_through: dec.straightThrough,
      });
      dec.farBias.dispose();
    } else {
      let decisions: Tensor<"i32"> | undefined;
      if (target) {
        // the entry was stored by the q/k kernel, which applied the DMS decisions itself (a dense
        // cache takes none): `attend` reads no decisions
      } else if (qk.decisions) {
        decisions = qk.decisions;
        emit(cap, l, { alpha: qk.alpha });
      } else if (raw && !dms.disableEviction) {
        const d = inferDecisions(raw, {
          alphaScale: dms.alphaScale,
          alphaOffset: dms.alphaOffset,
          perLayer: dms.alphaPer === "layer",
        });
        decisions = d.decisions;
        emit(cap, l, { alpha: d.alpha });
      } else if (cap) {
        decisions = Tensor.zeros(this.gpu, [B, Hkv, T], "i32");
      } else {
        decisions = this.#noDecisions([B, Hkv, T]); // shared: not disposed below
      }
      raw?.dispose();
      att = opts.cache!.attend(l, qr, kr, vh, decisions, { keyMask: opts.keyMask });
      if (cap) cap("decisions", l, decisions!);
      else if (decisions !== this.#zeros) decisions?.dispose();
    }
    if (cap) {
      cap("q", l, qr);
      cap("k", l, kr);
      cap("v", l, vh);
    } else {
      qr.dispose();
      kr.dispose();
      vh.dispose();
    }

    // --- output projection and residual, x1 = x + o_proj(att), and x1's post-attention norm
    const att4 = as(att, [B, Hq, T, D]);
    const ao = toHeads(att4);
    att4.dispose();
    const aoFlat = as(ao, [B * T, Hq * D]);
    const postNorm = { weight: w.postNorm, eps };
    const o = defer
      ? { y: linear(aoFlat, w.oProj, { bias: w.oBias, residual: x }), normed: undefined }
      : linearNormOut(aoFlat, w.oProj, { bias: w.oBias, residual: x, norm: postNorm });
    aoFlat.dispose();

    // --- MLP: down(silu(gate)·up) + x1, gate/up/SiLU in one dispatch, the residual in down's,
    // and the next norm of the result (or, deferred, the post-attention norm in gate/up's)
    const a = linearSwiglu(o.normed ?? o.y, w.gateProj, w.upProj, {
      gateBias: w.gateBias,
      upBias: w.upBias,
      norm: o.normed ? undefined : { ...postNorm, deferred: true },
    });
    o.normed?.dispose();
    const nextNorm = l + 1 < cfg.numLayers
      ? this.weights.layers[l + 1].inputNorm
      : this.weights.finalNorm;
    const out = defer
      ? { y: linear(a, w.downProj, { bias: w.downBias, residual: o.y }) }
      : linearNormOut(a, w.downProj, {
        bias: w.downBias,
        residual: o.y,
        norm: { weight: nextNorm, eps },
      });
    a.dispose();
    o.y.dispose();
    return out;
  }
}

/** Rows `idx` of `x:[N, H]` → `[len(idx), H]` (the embedding gather over activations). */
function gatherRows(x: Tensor<FloatDType>, idx: Tensor<"i32">): Tensor<FloatDType> {
  return embedding(idx, x);
}

/** `t` viewed with another shape; `t` itself is disposed (the view keeps the buffer). */
function as<D extends DType>(t: Tensor<D>, shape: readonly number[]): Tensor<D> {
  const v = t.reshape(shape);
  t.dispose();
  return v;
}

function replace<T extends Tensor>(old: Tensor, next: T): T {
  old.dispose();
  return next;
}

function emit(
  cap: ForwardOptions["capture"],
  layer: number,
  ts: Partial<Record<CaptureName, Tensor>>,
): void {
  for (const [name, t] of Object.entries(ts)) {
    if (!t) continue;
    if (cap) cap(name as CaptureName, layer, t);
    else t.dispose();
  }
}
