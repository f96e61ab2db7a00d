/**
 * The DMS KV cache: delayed eviction with a sliding window (SPEC §2, §5) as a policy on the
 * paged per-head storage of `src/cache/paged_cache.ts`, decode and chunked-prefill attention
 * through it, and accounting. Everything runs on the GPU; a step reads nothing back.
 *
 * Index conventions (`src/dms/oracle.ts` is their CPU oracle): `d[t]` (decision computed at
 * token t) marks key t−1, `mark(i) = d(i+1)`, the newest key is unmarked (§2). With the cache
 * window Wc = W + 1, query q sees key i iff i ≤ q, i is not padding, and `mark(i) = 0` or
 * `q − i ≤ W` (§5.1). Positions are column indices: left padding occupies positions too.
 *
 * Policy state per layer and page (b, h): a ring of the last Wc positions, `ring[pos % Wc] =
 * (slot, flag)` (slot −1: no entry there, e.g. padding), kept equal to the storage's per-slot
 * mark. Invariant after every step: the page holds exactly the keys the next query may see,
 * i.e. every stored entry with mark 1 lies in the ring (pos + Wc > newest), and slots
 * 0..len−1 are all live.
 *
 * Decode (n = 1, kernel `decode_update`, then `scatter`, then attention): SPEC §5.2 steps 1–4
 * literally. c = ring[t % Wc] is token t − Wc; if flagged, the new token overwrites its slot
 * (the eviction, before attention), else it is appended at len; d_t is written as the flag of
 * token t − 1 (if the page is non-empty); ring[t % Wc] = (slot, 0). Block allocation (§5.2 step
 * 5) is CPU-side from an upper bound of len (see {@linkcode DmsCache.reserve}).
 *
 * Prefill of a chunk of n tokens at positions t0..t0+n−1 (simpler than the reference's
 * recent+paged split of §5.3, and equivalent):
 * 1. `prefill_marks`: chunk marks d(j+1) for j < n−1, 0 for the last, 2 for padding; the carry
 *    writes d(0) onto the previous newest entry (position t0 − 1) (§2 "Prefill").
 * 2. Attention of the chunk's queries over the page's entries plus the chunk's own keys (read
 *    from k/v directly), with the exact §5.1 rule on (position, mark). Because the page holds
 *    every key any later query can see (invariant), this equals the dense §5.1 oracle over all
 *    tokens so far.
 * 3. `prefill_compact`: drops the entries no future query sees, i.e. mark 1 and
 *    pos + Wc ≤ newest (= t0 + n − 1): old ones can only be in the ring, new ones are chunk
 *    entries j ≤ n − 1 − Wc with d(j+1) = 1; padding is never stored. The freed old slots are
 *    refilled first by the chunk's survivors (in position order), the rest are appended at len,
 *    so slots 0..len'−1 stay dense; the ring is rewritten for the last Wc positions.
 * 4. `scatter` writes the survivors' K, V, position and mark.
 * The result is what token-by-token decode leaves: the same set of positions per page (the
 * keys the next query may see, §5.1), the same last-Wc entries and flags. The proof that no
 * slot is left empty: when a page is non-empty the chunk has no padding, at most min(n, Wc) old
 * entries leave, and at least min(n, Wc) new ones (the last Wc) stay. Prefill works after
 * decode too, so multi-turn use (prefill → decode → prefill → …) equals one long sequence,
 * which the reference cannot do (it falls back to 1-token prefills, §5.3 "Mode handling").
 *
 * Merging partial softmaxes (decode partitions): a partition with no visible key has weight 0
 * (max-subtracted merge). The reference's `where(isinf(lse), 0, lse)` gives such an empty
 * partition weight e^0 = 1 with real flash-attn, in the corner where a head kept nothing older
 * than the window (SPEC §9.7); we follow the exact semantics, as the golden vectors do.
 *
 * Dense policy: `evict: false` (or {@linkcode createDenseCache}) reads every decision as 0, so
 * nothing is ever marked or evicted; it is the plain KV cache the model uses without DMS.
 *
 * Accounting (all on the GPU, read back only by {@linkcode DmsCache.stats}): per-page live
 * lengths; after the last layer of each step the total live entries, their peak, and in decode
 * the KV entries read (Σ layers Σ pages current length, SPEC §8); the compression ratio as the
 * reference's `get_cr` and as dense/kept.
 *
 * @example Prefill a prompt, then decode, through a DMS cache (one layer shown)
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { Tensor } from "../tensor/tensor.ts";
 * import { createDmsCache } from "./dms_cache.ts";
 * const gpu = await getGpu();
 * const [B, Hkv, Hq, D, P] = [1, 2, 4, 16, 10];
 * using cache = createDmsCache(gpu, { layers: 1, batch: B, kvHeads: Hkv, headDim: D, window: 4, blockSize: 2 });
 * const rnd = (n: number) => Array.from({ length: n }, () => Math.random() - 0.5);
 * using q = Tensor.fromArray(gpu, rnd(B * Hq * P * D), [B, Hq, P, D]);
 * using k = Tensor.fromArray(gpu, rnd(B * Hkv * P * D), [B, Hkv, P, D]);
 * using v = Tensor.fromArray(gpu, rnd(B * Hkv * P * D), [B, Hkv, P, D]);
 * using d = Tensor.fromArray(gpu, Array.from({ length: B * Hkv * P }, (_, i) => i % 2), [B, Hkv, P], "i32");
 * using out = cache.attend(0, q, k, v, d);             // prefill: out [1, 4, 10, 16]
 * await cache.reserve(1);
 * using q1 = Tensor.fromArray(gpu, rnd(B * Hq * D), [B, Hq, 1, D]);
 * using k1 = Tensor.fromArray(gpu, rnd(B * Hkv * D), [B, Hkv, 1, D]);
 * using v1 = Tensor.fromArray(gpu, rnd(B * Hkv * D), [B, Hkv, 1, D]);
 * using d1 = Tensor.fromArray(gpu, [1, 0], [B, Hkv, 1], "i32");
 * using o1 = cache.attend(0, q1, k1, v1, d1);           // decode: o1 [1, 4, 1, 16]
 * console.log((await cache.stats()).lengths); // [[8, 8]]: the last 5 positions + odd keys 1, 3, 5
 * ```
 *
 * @module
 */

import { Gpu, Params } from "../gpu/device.ts";
import type { AttendOptions, KvCache, KvCacheStats } from "../cache/kv_cache.ts";
import { PagedKvStorage, type PageEntries } from "../cache/paged_cache.ts";
import { dispatchBound } from "../cache/_bind.ts";
import { fmtShape, type Tensor } from "../tensor/tensor.ts";

/** Options of {@linkcode createDmsCache}. */
export interface DmsCacheOptions {
  /** Decoder layers. */
  layers: number;
  /** Sequences B. */
  batch: number;
  /** KV heads per layer Hkv. */
  kvHeads: number;
  /** Channels per head D. */
  headDim: number;
  /**
   * W = `dms_window_size` (512 in the checkpoints): a marked key stays visible for distances
   * 0..W and leaves when token i + W + 1 arrives. The cache window is Wc = W + 1. Required
   * unless `evict` is false.
   */
  window?: number;
  /** Entries per block (`dms_paged_attention_block_size`); at most W + 1. Default min(256, W + 1). */
  blockSize?: number;
  /** Storage dtype of K and V (q, k, v must match). Default f32. */
  dtype?: "f32" | "f16";
  /** false: the dense policy, nothing is evicted and decisions are ignored. Default true. */
  evict?: boolean;
  /** Tokens per page the initial pool holds (SPEC: 4096). */
  preallocateTokens?: number;
  /** Keys per attention partition (rounded up to 32); default chosen from the lengths. For tests and benchmarks. */
  partitionKeys?: number;
  /** Decode attention kernel, `"split"` (default) or `"tiled"`; see `PagedStorageOptions`. */
  decodeKernel?: "split" | "tiled";
}

/** Options of {@linkcode createDenseCache}. */
export type DenseCacheOptions = Omit<DmsCacheOptions, "window" | "evict">;

/** One page's state from {@linkcode DmsCache.inspect}. */
export interface DmsPageState extends PageEntries {
  /** The ring: the last Wc positions that have an entry, oldest first, with their slot and flag. */
  recent: { position: number; slot: number; flag: number }[];
}

/**
 * Creates a DMS cache (or, with `evict: false`, the dense cache) on the GPU.
 *
 * @throws {RangeError} For a window that is not an integer ≥ 1, a block size that is not an
 *   integer ≥ 1 or exceeds the cache window W + 1, or bad sizes.
 *
 * @example
 * ```ts
 * import { getGpu } from "../gpu/device.ts";
 * import { createDmsCache } from "./dms_cache.ts";
 * const gpu = await getGpu();
 * using cache = createDmsCache(gpu, { layers: 28, batch: 1, kvHeads: 8, headDim: 128, window: 512, dtype: "f16" });
 * ```
 */
export function createDmsCache(gpu: Gpu, options: DmsCacheOptions): DmsCache {
  return new DmsCache(gpu, options);
}

/** Creates the dense KV cache (never evicts) on the same paged storage. */
export function createDenseCache(gpu: Gpu, options: DenseCacheOptions): DmsCache {
  return new DmsCache(gpu, { ...options, evict: false });
}

/** The DMS (or dense) KV cache; see the module documentation. */
export class DmsCache implements KvCache {
  /** The paged storage (shared layout with every other policy). */
  readonly storage: PagedKvStorage;
  /** W; 0 for the dense policy. */
  readonly window: number;
  /** Wc = W + 1, the ring size (1 for the dense policy). */
  readonly cacheWindow: number;
  /** false for the dense policy. */
  readonly evict: boolean;
  /** Decoder layers. */
  readonly layers: number;
  /** Sequences. */
  readonly batch: number;
  /** KV heads. */
  readonly kvHeads: number;
  /** Head dim. */
  readonly headDim: number;
  /** Storage dtype. */
  readonly dtype: "f32" | "f16";

  readonly #gpu: Gpu;
  readonly #ring: GPUBuffer;
  readonly #fr: GPUBuffer;
  readonly #frHost: Int32Array;
  readonly #step1: { dest: GPUBuffer; marks: GPUBuffer; holes: GPUBuffer; dummy: GPUBuffer };
  readonly #started: Uint8Array;
  readonly #pad: Float64Array;
  #seen = 0;
  #nextLayer = 0;
  #stepN = 0;
  #stepPrefill = false;
  #stepMask: Int32Array | undefined;
  #frUploaded: Int32Array | undefined;
  #disposed = false;

  /** Prefer {@linkcode createDmsCache} / {@linkcode createDenseCache}. */
  constructor(gpu: Gpu, options: DmsCacheOptions) {
    const evict = options.evict ?? true;
    let window = 0;
    if (evict) {
      const w = options.window;
      if (w === undefined) {
        throw new RangeError("createDmsCache: window is required when evict is true");
      }
      if (!Number.isInteger(w) || w < 1) {
        throw new RangeError(`createDmsCache: window must be an integer >= 1, got ${w}`);
      }
      window = w;
    }
    const blockSize = options.blockSize ?? (evict ? Math.min(256, window + 1) : 256);
    if (!Number.isInteger(blockSize) || blockSize < 1) {
      throw new RangeError(`createDmsCache: blockSize must be an integer >= 1, got ${blockSize}`);
    }
    if (evict && blockSize > window + 1) {
      throw new RangeError(
        `createDmsCache: blockSize ${blockSize} exceeds the cache window W + 1 = ${window + 1} ` +
          `(window ${window}); SPEC §5.2 needs block_size <= W + 1`,
      );
    }
    this.storage = new PagedKvStorage(gpu, {
      layers: options.layers,
      batch: options.batch,
      kvHeads: options.kvHeads,
      headDim: options.headDim,
      blockSize,
      dtype: options.dtype,
      preallocateTokens: options.preallocateTokens,
      partitionKeys: options.partitionKeys,
      decodeKernel: options.decodeKernel,
    });
    this.#gpu = gpu;
    this.evict = evict;
    this.window = window;
    this.cacheWindow = window + 1;
    this.layers = options.layers;
    this.batch = options.batch;
    this.kvHeads = options.kvHeads;
    this.headDim = options.headDim;
    this.dtype = this.storage.dtype;
    const pages = this.storage.pages;
    const wc = this.cacheWindow;
    const ring = new Int32Array(this.layers * pages * wc * 2);
    for (let i = 0; i < ring.length; i += 2) ring[i] = -1;
    this.#ring = gpu.alloc(ring.byteLength, "dms ring");
    gpu.write(this.#ring, ring);
    this.#fr = gpu.alloc(this.batch * 4, "dms first real");
    this.#frHost = new Int32Array(this.batch);
    gpu.encoder().clearBuffer(this.#fr);
    this.#frUploaded = new Int32Array(this.batch);
    this.#step1 = {
      dest: gpu.alloc(pages * 4, "dms dest"),
      marks: gpu.alloc(pages * 4, "dms marks"),
      holes: gpu.alloc(pages * wc * 4, "dms holes"),
      dummy: gpu.alloc(16, "dms no decisions"),
    };
    gpu.encoder().clearBuffer(this.#step1.marks);
    gpu.encoder().clearBuffer(this.#step1.dummy);
    this.#started = new Uint8Array(this.batch);
    this.#pad = new Float64Array(this.batch);
  }

  /** Positions processed so far (padding included); advanced after the last layer of a step. */
  get tokensSeen(): number {
    return this.#seen;
  }

  /**
   * Stores the step's k/v for `layer` under the DMS policy and returns attention of q through
   * the cache; see {@linkcode KvCache.attend}. n = 1 without padding is a decode step (SPEC
   * §5.2), otherwise a prefill chunk (the module documentation says how).
   *
   * @param decisions `[B, Hkv, n]` i32 hard decisions (unshifted, SPEC §2); optional when
   *   `evict` is false (then ignored).
   * @returns `[B, Hq, n, D]`.
   * @throws {RangeError} Wrong shapes (naming them), layers out of order, a keyMask that is not
   *   left padding.
   * @throws {TypeError} Wrong dtypes, missing decisions.
   */
  attend(
    layer: number,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    decisions?: Tensor,
    options: AttendOptions = {},
  ): Tensor {
    const op = "DmsCache.attend";
    if (this.#disposed) throw new Error(`${op}: cache used after dispose()`);
    if (!Number.isInteger(layer) || layer < 0 || layer >= this.layers) {
      throw new RangeError(
        `${op}: layer must be an integer in 0..${this.layers - 1}, got ${layer}`,
      );
    }
    if (layer !== this.#nextLayer) {
      throw new RangeError(
        `${op}: layers must be attended in order 0..${this.layers - 1} within a step: ` +
          `expected layer ${this.#nextLayer}, got ${layer}`,
      );
    }
    const n = this.storage.checkInputs(op, q, k, v);
    if (layer > 0 && n !== this.#stepN) {
      throw new RangeError(
        `${op}: layer ${layer} got n = ${n} tokens, but layer 0 of this step got ${this.#stepN}`,
      );
    }
    const B = this.batch, Hkv = this.kvHeads;
    if (decisions) {
      if (decisions.dtype !== "i32") {
        throw new TypeError(
          `${op}: decisions must be i32, got ${decisions.dtype}${fmtShape(decisions.shape)}`,
        );
      }
      const want = [B, Hkv, n];
      if (decisions.rank !== 3 || decisions.shape.some((x, i) => x !== want[i])) {
        throw new RangeError(
          `${op}: decisions: expected shape ${fmtShape(want)} [B, Hkv, n], got ${
            fmtShape(decisions.shape)
          }`,
        );
      }
    } else if (this.evict) {
      throw new TypeError(
        `${op}: decisions [${B}, ${Hkv}, ${n}] i32 are required when evict is true`,
      );
    }
    if (layer === 0) {
      this.#beginStep(op, n, options.keyMask);
    } else {
      this.#checkSameMask(op, layer, options.keyMask);
    }
    const scale = options.scale ?? 1 / Math.sqrt(this.headDim);
    const dBuf = this.evict && decisions ? decisions.buffer : this.#step1.dummy;
    const out = this.#stepPrefill
      ? this.#prefill(layer, q, k, v, dBuf, scale)
      : this.#decode(layer, q, k, v, dBuf, scale);
    if (layer === this.layers - 1) this.#endStep();
    else this.#nextLayer = layer + 1;
    return out;
  }

  /** See {@linkcode KvCache.reserve}: room for `steps` more tokens per page, at most one readback. */
  reserve(steps: number): Promise<void> {
    return this.storage.reserve(steps);
  }

  /** See {@linkcode KvCache.stats}. One readback. Call between steps (after the last layer). */
  async stats(): Promise<KvCacheStats> {
    const s = this.storage;
    const { lens, counters } = await s.readCounters();
    const pages = s.pages;
    const lengths: number[][] = [];
    let live = 0, frac = 0, dense = 0;
    const seen = this.#seen;
    for (let l = 0; l < this.layers; l++) {
      const row: number[] = [];
      for (let p = 0; p < pages; p++) {
        const len = lens[l * pages + p];
        row.push(len);
        live += len;
        frac += len / Math.max(seen, 1);
        dense += seen - this.#pad[Math.floor(p / this.kvHeads)];
      }
      lengths.push(row);
    }
    const count = this.layers * pages;
    return {
      tokensSeen: seen,
      lengths,
      liveTokens: live,
      peakTokens: counters[3],
      readTokens: counters[0] + counters[1] * 2 ** 32,
      decodeSteps: counters[4],
      liveBytes: live * s.bytesPerToken,
      peakBytes: counters[3] * s.bytesPerToken,
      allocatedBytes: s.allocatedBytes,
      compressionRatio: frac > 0 ? 1 / (frac / count) : 1,
      compressionRatioDenseOverKept: live > 0 ? dense / live : 1,
    };
  }

  /**
   * Reads one layer's pages back: live positions and marks in slot order, and the ring (last
   * Wc positions with an entry, oldest first). For tests and debugging; one readback.
   */
  async inspect(layer: number): Promise<DmsPageState[]> {
    const pages = this.storage.pages, wc = this.cacheWindow;
    const entries = await this.storage.snapshot(layer);
    const bytes = await this.#gpu.read(this.#ring, this.layers * pages * wc * 8);
    const ring = new Int32Array(bytes);
    return entries.map((e, p) => {
      const recent: DmsPageState["recent"] = [];
      for (let pos = Math.max(0, this.#seen - wc); pos < this.#seen; pos++) {
        const i = ((layer * pages + p) * wc + (pos % wc)) * 2;
        if (ring[i] >= 0) recent.push({ position: pos, slot: ring[i], flag: ring[i + 1] });
      }
      return { ...e, recent };
    });
  }

  /** Frees the GPU buffers. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    this.storage.dispose();
    const g = this.#gpu;
    for (
      const b of [
        this.#ring,
        this.#fr,
        this.#step1.dest,
        this.#step1.marks,
        this.#step1.holes,
        this.#step1.dummy,
      ]
    ) {
      g.release(b);
    }
  }

  /** `using cache = ...` disposes at the end of the scope. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  #beginStep(op: string, n: number, keyMask: ArrayLike<number> | undefined): void {
    const B = this.batch;
    const fr = this.#frHost;
    fr.fill(0);
    this.#stepMask = undefined;
    if (keyMask) {
      if (keyMask.length !== B * n) {
        throw new RangeError(
          `${op}: keyMask: expected ${B * n} values [B, n] = [${B}, ${n}], got ${keyMask.length}`,
        );
      }
      const m = Int32Array.from(keyMask);
      for (let b = 0; b < B; b++) {
        let f = n;
        for (let j = 0; j < n; j++) {
          const x = m[b * n + j];
          if (x !== 0 && x !== 1) {
            throw new RangeError(`${op}: keyMask[${b}, ${j}] must be 0 or 1, got ${x}`);
          }
          if (x === 1 && f === n) f = j;
          if (x === 0 && (f < n || this.#started[b])) {
            throw new RangeError(
              `${op}: keyMask row ${b} has a 0 at ${j} after a token; only left padding is supported`,
            );
          }
        }
        fr[b] = f;
      }
      this.#stepMask = m;
    }
    this.#stepN = n;
    this.#stepPrefill = n > 1 || fr.some((f) => f > 0);
    if (this.#stepPrefill && !equal(fr, this.#frUploaded)) {
      this.#gpu.write(this.#fr, fr);
      this.#frUploaded = fr.slice();
    }
  }

  #checkSameMask(op: string, layer: number, keyMask: ArrayLike<number> | undefined): void {
    const m = this.#stepMask;
    const same = m === undefined
      ? keyMask === undefined || Array.prototype.every.call(keyMask, (x: number) => x === 1)
      : keyMask !== undefined && keyMask.length === m.length &&
        Array.prototype.every.call(keyMask, (x: number, i: number) => x === m[i]);
    if (!same) {
      throw new RangeError(
        `${op}: layer ${layer} got a different keyMask than layer 0 of this step`,
      );
    }
  }

  #endStep(): void {
    this.storage.account(!this.#stepPrefill);
    const n = this.#stepN;
    for (let b = 0; b < this.batch; b++) {
      const f = this.#frHost[b];
      this.#pad[b] += f;
      if (f < n) this.#started[b] = 1;
    }
    this.#seen += n;
    this.#nextLayer = 0;
  }

  #policyBuffers(
    layer: number,
    decisions: GPUBuffer,
    cm: GPUBuffer,
    dest: GPUBuffer,
  ): (GPUBuffer | undefined)[] {
    const s = this.storage;
    return [
      undefined,
      s.lens,
      this.#ring,
      s.table,
      s.meta(layer),
      decisions,
      this.#fr,
      cm,
      dest,
      this.#step1.holes,
    ];
  }

  #params(layer: number, n: number): Params {
    const s = this.storage;
    return new Params()
      .u32(s.pages).u32(this.kvHeads).u32(n).u32(this.cacheWindow)
      .u32(this.evict ? 1 : 0).u32(s.blockSize).u32(s.tableWidth).u32(layer * s.pages)
      .i32(this.#seen);
  }

  #decode(layer: number, q: Tensor, k: Tensor, v: Tensor, d: GPUBuffer, scale: number): Tensor {
    const s = this.storage, gpu = this.#gpu;
    s.ensure(layer, () => 1);
    const { dest, marks } = this.#step1;
    const kern = gpu.kernel({ shader: "dms_cache", entry: "decode_update", constants: { WG: 64 } });
    dispatchBound(
      gpu,
      kern,
      this.#policyBuffers(layer, d, marks, dest),
      Gpu.grid(Math.ceil(s.pages / 64)),
      this.#params(layer, 1),
    );
    s.scatter(layer, dest, marks, k, v, this.#seen);
    return s.attention(layer, q, { t0: this.#seen, window: this.window, scale });
  }

  #prefill(layer: number, q: Tensor, k: Tensor, v: Tensor, d: GPUBuffer, scale: number): Tensor {
    const s = this.storage, gpu = this.#gpu;
    const n = this.#stepN, pages = s.pages;
    const cm = gpu.alloc(pages * n * 4, "dms chunk marks");
    const dest = gpu.alloc(pages * n * 4, "dms chunk dest");
    const bufs = () => this.#policyBuffers(layer, d, cm, dest);
    const params = this.#params(layer, n);
    const marks = gpu.kernel({
      shader: "dms_cache",
      entry: "prefill_marks",
      constants: { WG: 64 },
    });
    dispatchBound(gpu, marks, bufs(), Gpu.grid(Math.ceil((pages * n) / 64)), params);
    const out = s.attention(layer, q, {
      t0: this.#seen,
      window: this.window,
      scale,
      chunk: { k, v, marks: cm },
    });
    s.ensure(layer, (p) => n - this.#frHost[Math.floor(p / this.kvHeads)]);
    const compact = gpu.kernel({
      shader: "dms_cache",
      entry: "prefill_compact",
      constants: { WG: 256 },
    });
    dispatchBound(gpu, compact, bufs(), Gpu.grid(pages), this.#params(layer, n));
    s.scatter(layer, dest, cm, k, v, this.#seen);
    gpu.release(cm);
    gpu.release(dest);
    return out;
  }
}

function equal(a: Int32Array, b: Int32Array | undefined): boolean {
  return b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
}
