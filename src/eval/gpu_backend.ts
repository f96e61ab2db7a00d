/**
 * The GPU conformance backend: runs each golden case through the WebGPU
 * implementation (the same decoder, decision kernels and KV cache users run)
 * and returns the tensors the runner compares with NVIDIA's reference. What
 * the reference cache reports (−1 rows, `get_cr`) is derived from our cache's
 * lengths by `observables.ts`, the same code the CPU backend uses; `cr_model`
 * is our cache's own `stats().compressionRatio`.
 *
 * @example Run the vendored cases on the GPU
 * ```ts
 * import { runConformance } from "./conformance.ts";
 * import { gpuBackend } from "./gpu_backend.ts";
 * const report = await runConformance(undefined, { backend: gpuBackend });
 * console.log(report.passed, report.failed); // 10 0
 * ```
 *
 * @module
 */

import { getGpu } from "../gpu/device.ts";
import { Tensor } from "../tensor/tensor.ts";
import { Model } from "../model/model.ts";
import { loadWeights, memoryReader } from "../model/weights.ts";
import type { CaptureName } from "../model/transformer.ts";
import { createDmsCache, type DmsCache } from "../dms/dms_cache.ts";
import { compressionScalars } from "../model/reference.ts";
import type {
  AttentionOnlyCase,
  BackendOutputs,
  ConformanceBackend,
  InferenceCase,
  TrainForwardCase,
} from "./case.ts";
import type { CaseTensor } from "./compare.ts";
import { denseRetainedMask, fillUnobserved, inferenceObservables } from "./observables.ts";
import { gpuTrainStep } from "./gpu_train_backend.ts";

type Captured = Map<string, Tensor[]>; // name -> per layer

function collector(): { map: Captured; capture: (n: CaptureName, l: number, t: Tensor) => void } {
  const map: Captured = new Map();
  return {
    map,
    capture: (name, layer, t) => {
      let list = map.get(name);
      if (!list) map.set(name, list = []);
      list[layer] = t;
    },
  };
}

/** Concatenates per-layer tensors `[...]` into `[L, ...]` on the CPU. */
async function stack(ts: Tensor[]): Promise<{ shape: number[]; data: Float32Array | Int32Array }> {
  const parts = await Promise.all(ts.map((t) => t.toArray()));
  const n = parts[0].length;
  const isInt = ts[0].dtype === "i32";
  const data = isInt ? new Int32Array(n * parts.length) : new Float32Array(n * parts.length);
  parts.forEach((p, i) => data.set(p, i * n));
  return { shape: [ts.length, ...ts[0].shape], data };
}

function disposeAll(m: Captured): void {
  for (const list of m.values()) for (const t of list) t?.dispose();
}

async function modelFor(c: TrainForwardCase | InferenceCase): Promise<Model> {
  const gpu = await getGpu();
  const weights = await loadWeights(
    gpu,
    c.config,
    memoryReader(c.weights, `${c.dir}/weights.safetensors`),
    c.dir,
    {
      dtype: "f32",
    },
  );
  return new Model(gpu, c.config, weights, "f32");
}

/** A: train-mode forward with the case's noise, plus the teacher forward. */
async function trainCase(c: TrainForwardCase): Promise<BackendOutputs> {
  const model = await modelFor(c);
  const gpu = model.gpu, cfg = model.config;
  const [B, S] = c.inputs.input_ids.shape;
  const L = cfg.numLayers, Hkv = cfg.numKvHeads, per = B * Hkv * S;
  const noise = Array.from(
    { length: L },
    (_, l) =>
      Tensor.fromArray(gpu, c.inputs.noise.data.subarray(l * per, (l + 1) * per), [
        B,
        Hkv,
        S,
      ]) as Tensor<"f32">,
  );
  const col = collector();
  try {
    using ids = Tensor.fromArray(gpu, c.inputs.input_ids.data, [B, S], "i32");
    using pos = Tensor.fromArray(
      gpu,
      Array.from({ length: B * S }, (_, i) => i % S),
      [B, S],
      "i32",
    );
    using logits = model.forward(ids, {
      mode: "train",
      positions: pos,
      noise,
      capture: col.capture,
    })!;
    using teacher = model.forward(ids, { mode: "teacher", positions: pos })!;
    const out: Record<string, CaseTensor> = {
      logits: { shape: [B, S, cfg.vocabSize], data: await logits.toArray() },
      logits_teacher: { shape: [B, S, cfg.vocabSize], data: await teacher.toArray() },
    };
    const lo = await stack(col.map.get("layer_out")!);
    out.layer_out = lo;
    const names: [CaptureName, string][] = [
      ["alpha", "decision_logits_raw"],
      ["z", "decision_logits_noisy"],
      ["prob", "decision_probs"],
      ["decisions", "decisions_hard"],
      ["straight_through", "decisions_straight_through"],
    ];
    for (const [from, to] of names) out[to] = await stack(col.map.get(from)!);
    // SPEC §6 frac_closed / dms_loss and the logged cr, from our straight-through decisions
    const sc = compressionScalars(
      out.decisions_straight_through.data, // [L, B, Hkv, S]
      L,
      B,
      c.params.targetFracToClose,
    );
    const scalar = (v: number): CaseTensor => ({ shape: [1], data: new Float64Array([v]) });
    out.dms_frac_closed = scalar(sc.dmsFracClosed);
    out.dms_loss = scalar(sc.dmsLoss);
    out["model_reported.dms_frac_closed"] = scalar(sc.dmsFracClosed);
    out["model_reported.dms_loss"] = scalar(sc.dmsLoss);
    out["model_reported.cr"] = scalar(sc.cr);
    return out;
  } finally {
    for (const t of noise) t.dispose();
    disposeAll(col.map);
    model.dispose();
  }
}

/** Concatenates per-chunk `[..., n_c, ...rest]` arrays along axis `axis` of shape `dims`. */
function concatAlong(parts: { shape: number[]; data: Float32Array | Int32Array }[], axis: number) {
  const outer = parts[0].shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = parts[0].shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const total = parts.reduce((a, p) => a + p.shape[axis], 0);
  const isInt = parts[0].data instanceof Int32Array;
  const data = isInt
    ? new Int32Array(outer * total * inner)
    : new Float32Array(outer * total * inner);
  let off = 0;
  for (const p of parts) {
    const n = p.shape[axis];
    for (let o = 0; o < outer; o++) {
      data.set(p.data.subarray(o * n * inner, (o + 1) * n * inner), (o * total + off) * inner);
    }
    off += n;
  }
  const shape = [...parts[0].shape];
  shape[axis] = total;
  return { shape, data };
}

/** Live positions per (layer, page) as 0/1 rows over T positions: `[L, pages, T]`. */
async function retainedRows(cache: DmsCache, T: number): Promise<Int32Array> {
  const L = cache.layers, pages = cache.batch * cache.kvHeads;
  const out = new Int32Array(L * pages * T);
  for (let l = 0; l < L; l++) {
    const st = await cache.inspect(l);
    st.forEach((page, p) => {
      for (const pos of page.positions) out[(l * pages + p) * T + pos] = 1;
    });
  }
  return out;
}

/**
 * B: prefill the prompt (in chunks of `dms_chunked_prefill` when set), then one
 * decode step per further token, teacher-forced, through the GPU DMS cache.
 */
async function inferenceCase(c: InferenceCase): Promise<BackendOutputs> {
  const model = await modelFor(c);
  const gpu = model.gpu, cfg = model.config;
  const ids = c.inputs.input_ids.data;
  const T = ids.length, P = c.params.promptLen;
  const L = cfg.numLayers, Hkv = cfg.numKvHeads, V = cfg.vocabSize, Wc = cfg.dms.window + 1;
  const cache = createDmsCache(gpu, {
    layers: L,
    batch: 1,
    kvHeads: Hkv,
    headDim: cfg.headDim,
    window: cfg.dms.window,
    blockSize: Math.min(cfg.dms.blockSize, Wc),
    dtype: "f32",
  });
  const chunks: [number, number][] = [];
  const step = c.params.chunkedPrefill ?? P;
  for (let s = 0; s < P; s += step) chunks.push([s, Math.min(P, s + step)]);
  for (let t = P; t < T; t++) chunks.push([t, t + 1]);
  const captured = new Map<string, { shape: number[]; data: Float32Array | Int32Array }[][]>();
  const logits = new Float32Array(T * V);
  const lengths = new Int32Array(T * L * Hkv).fill(-1); // [T, L, Hkv] keys held after token t
  const cacheRetained = new Int32Array(T * L * Hkv * T).fill(-1); // [T, L, Hkv, T]
  const cacheCr = new Float64Array(T).fill(NaN); // [T] our cache's own compression ratio
  try {
    for (const [s, e] of chunks) {
      const n = e - s;
      const col = collector();
      using idt = Tensor.fromArray(gpu, ids.subarray(s, e), [1, n], "i32");
      using pos = Tensor.fromArray(gpu, Array.from({ length: n }, (_, i) => s + i), [1, n], "i32");
      await cache.reserve(n);
      using lg = model.forward(idt, {
        mode: "inference",
        positions: pos,
        cache,
        capture: col.capture,
      })!;
      logits.set(await lg.toArray(), s * V);
      for (const [name, list] of col.map) {
        let per = captured.get(name);
        if (!per) captured.set(name, per = []);
        for (let l = 0; l < L; l++) {
          (per[l] ??= []).push({
            shape: [...list[l].shape],
            data: await list[l].toArray() as Float32Array | Int32Array,
          });
        }
      }
      disposeAll(col.map);
      const t = e - 1;
      if (t < P - 1) continue;
      // the cache is observable after the prompt and after every decode step
      const stats = await cache.stats();
      const rows = await retainedRows(cache, T);
      cacheRetained.set(rows, t * L * Hkv * T);
      for (let l = 0; l < L; l++) {
        for (let h = 0; h < Hkv; h++) lengths[(t * L + l) * Hkv + h] = stats.lengths[l][h];
      }
      cacheCr[t] = stats.compressionRatio;
    }
    const cat = (name: string, axis: number) => {
      const per = captured.get(name)!;
      const layers = per.map((parts) => concatAlong(parts, axis));
      const n = layers[0].data.length;
      const data = layers[0].data instanceof Int32Array
        ? new Int32Array(n * L)
        : new Float32Array(n * L);
      layers.forEach((x, l) => data.set(x.data, l * n));
      return { shape: [L, ...layers[0].shape.slice(1)], data };
    };
    const q = cat("q", 2), k = cat("k", 2), v = cat("v", 2); // [L, Hq|Hkv, T, D] (batch 1 dropped)
    const lo = cat("layer_out", 1); // [L, T, H]
    const alpha = cat("alpha", 2), dec = cat("decisions", 2); // [L, Hkv, T]
    // retained_mask: observable rows from the cache; earlier rows (inside the prefill) from the
    // §5.1 rule on our own decisions. cache_len and get_cr from the cache's lengths; cr_model is
    // the cache's own accounting (decode rows; NaN where the reference model returns None).
    const retained = fillUnobserved(
      cacheRetained,
      denseRetainedMask(dec.data, L * Hkv, T, cfg.dms.window),
      T,
    );
    const obs = inferenceObservables(lengths, { T, L, Hkv }, P, Wc);
    const crModel = obs.crModel.map((x, t) => (t >= P ? cacheCr[t] : x));
    return {
      logits: { shape: [T, V], data: logits },
      q: { shape: [L, cfg.numHeads, T, cfg.headDim], data: q.data },
      k: { shape: [L, Hkv, T, cfg.headDim], data: k.data },
      v: { shape: [L, Hkv, T, cfg.headDim], data: v.data },
      layer_out: { shape: [L, T, cfg.hiddenSize], data: lo.data },
      decision_logits: { shape: [L, Hkv, T], data: alpha.data },
      decisions: { shape: [L, Hkv, T], data: dec.data },
      cache_len: { shape: [T, L, Hkv], data: obs.cacheLen },
      cache_retained_mask: { shape: [T, L, Hkv, T], data: cacheRetained },
      retained_mask: { shape: [T, L, Hkv, T], data: retained },
      cr_cache: { shape: [T], data: obs.crCache },
      cr_model: { shape: [T], data: crModel },
      cr_cache_per_layer: { shape: [T, L], data: obs.crCachePerLayer },
    };
  } finally {
    cache.dispose();
    model.dispose();
  }
}

/**
 * C: one attention layer driven directly: chunked prefill with left padding,
 * then decode steps, through the GPU DMS cache.
 */
async function attentionCase(c: AttentionOnlyCase): Promise<BackendOutputs> {
  const gpu = await getGpu();
  const p = c.params;
  const B = p.batch, Hkv = p.headsKv, G = p.gqaFactor, D = p.headDim, Hq = Hkv * G;
  const S = p.prefillLen, N = p.numDecodeSteps, T = S + N;
  const { q, k, v, decisions, attn_mask: mask } = c.inputs;
  const cache = createDmsCache(gpu, {
    layers: 1,
    batch: B,
    kvHeads: Hkv,
    headDim: D,
    window: p.cacheWindow - 1,
    blockSize: p.blockSize,
    dtype: "f32",
  });
  // q arrives in the flash layout [B·Hkv, T, G, D]; ours is [B, Hq, n, D] with head h·G+i
  const qChunk = (s: number, e: number) => {
    const n = e - s, out = new Float32Array(B * Hq * n * D);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hkv; h++) {
        for (let t = s; t < e; t++) {
          for (let i = 0; i < G; i++) {
            const src = (((b * Hkv + h) * T + t) * G + i) * D;
            out.set(q.data.subarray(src, src + D), (((b * Hq + h * G + i) * n) + t - s) * D);
          }
        }
      }
    }
    return out;
  };
  const kvChunk = (x: typeof k, s: number, e: number, inner: number) => {
    const n = e - s, out = new Float32Array(B * Hkv * n * inner);
    for (let r = 0; r < B * Hkv; r++) {
      out.set(x.data.subarray((r * T + s) * inner, (r * T + e) * inner), r * n * inner);
    }
    return out;
  };
  const outRows = (o: Float32Array, n: number) => {
    // [B, Hq, n, D] -> [B, Hkv, n, G, D]
    const r = new Float32Array(B * Hkv * n * G * D);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hkv; h++) {
        for (let i = 0; i < G; i++) {
          for (let t = 0; t < n; t++) {
            const src = ((b * Hq + h * G + i) * n + t) * D;
            r.set(o.subarray(src, src + D), ((((b * Hkv + h) * n + t) * G) + i) * D);
          }
        }
      }
    }
    return r;
  };
  const prefillParts: { shape: number[]; data: Float32Array }[] = [];
  const decodeParts: { shape: number[]; data: Float32Array }[] = [];
  const cacheLen = new Int32Array(T * B * Hkv).fill(-1);
  const retained = new Int32Array(T * B * Hkv * T).fill(-1);
  const steps: [number, number][] = [
    ...p.prefillChunks.map(([s, e]) => [s, e] as [number, number]),
  ];
  for (let t = S; t < T; t++) steps.push([t, t + 1]);
  try {
    for (const [s, e] of steps) {
      const n = e - s;
      await cache.reserve(n);
      using qt = Tensor.fromArray(gpu, qChunk(s, e), [B, Hq, n, D]);
      using kt = Tensor.fromArray(gpu, kvChunk(k, s, e, D), [B, Hkv, n, D]);
      using vt = Tensor.fromArray(gpu, kvChunk(v, s, e, D), [B, Hkv, n, D]);
      using dt = Tensor.fromArray(gpu, kvChunk(decisions, s, e, 1), [B, Hkv, n], "i32");
      const keyMask = new Int32Array(B * n);
      for (let b = 0; b < B; b++) {
        keyMask.set(mask.data.subarray(b * T + s, b * T + e) as Int32Array, b * n);
      }
      const isDecode = s >= S;
      using out = cache.attend(0, qt, kt, vt, dt, isDecode ? {} : { keyMask });
      const rows = outRows(await out.toArray() as Float32Array, n);
      (isDecode ? decodeParts : prefillParts).push({ shape: [B, Hkv, n, G, D], data: rows });
      const t = e - 1;
      const st = await cache.stats();
      for (let pg = 0; pg < B * Hkv; pg++) cacheLen[t * B * Hkv + pg] = st.lengths[0][pg];
      const ret = await retainedRows(cache, T);
      retained.set(ret, t * B * Hkv * T);
    }
    // retained_mask: observable rows from the cache; rows inside a prefill chunk from the §5.1
    // rule (with padding) on the given decisions.
    const full = fillUnobserved(
      retained,
      denseRetainedMask(
        decisions.data,
        B * Hkv,
        T,
        p.cacheWindow - 1,
        (page) => mask.data.subarray(Math.floor(page / Hkv) * T, (Math.floor(page / Hkv) + 1) * T),
      ),
      T,
    );
    return {
      retained_mask: { shape: [T, B, Hkv, T], data: full },
      prefill_out: concatAlong(prefillParts, 2),
      decode_out: concatAlong(decodeParts, 2),
      cache_len: { shape: [T, B, Hkv], data: cacheLen },
      cache_retained_mask: { shape: [T, B, Hkv, T], data: retained },
    };
  } finally {
    cache.dispose();
  }
}

/** The GPU backend for {@linkcode runConformance}. */
export const gpuBackend: ConformanceBackend = {
  name: "gpu",
  trainForward: trainCase,
  inference: inferenceCase,
  attentionOnly: attentionCase,
  trainStep: gpuTrainStep,
};
