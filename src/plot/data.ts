/**
 * The data the pictures draw, without a renderer: what became of every position of every
 * (layer, KV head) page (the eviction map, read back from a paged cache and classified by the
 * SPEC §5.1 visibility rule) and the accounting points of compression over generation. The
 * library (`generate`, `textGeneration`) produces these; `./eviction_map.ts` and
 * `./compression.ts` draw them with Vega, which only those importers load.
 *
 * @example Classify one page: positions 0..4 seen, window 1
 * ```ts
 * import { classifyPage } from "./data.ts";
 * // slots hold positions 0, 3, 4 with marks 0, 1, 1; positions 1 and 2 were evicted
 * console.log(classifyPage({ positions: [0, 3, 4], marks: [0, 1, 1] }, 5, 1));
 * // ["kept", "evicted", "evicted", "window", "window"]
 * ```
 *
 * @module
 */

/** The accounting of one cache after one step (a subset of `KvCacheStats`, plus the policy). */
export interface CompressionPoint {
  /** Series name, e.g. "dense" or "dms". */
  policy: string;
  /** Positions processed so far (x). */
  tokensSeen: number;
  /** Σ over layers and pages of the live KV entries. */
  liveTokens: number;
  /** The reference's `get_cr` (SPEC §5.4). */
  compressionRatio: number;
}

/** What became of one position in one (layer, KV head) page. */
export type EntryState = "kept" | "window" | "evicted";

/** The three states in legend order. */
export const ENTRY_STATES: readonly EntryState[] = Object.freeze(["kept", "window", "evicted"]);

/** One page's stored entries in slot order (the shape of `PagedKvStorage.snapshot` rows). */
export interface StoredEntries {
  /** Absolute position of each stored slot. */
  positions: readonly number[];
  /** Mark of each stored slot (0 keep, 1 marked for eviction). */
  marks: readonly number[];
}

/** What {@linkcode readEvictionMap} needs of a cache: a `PagedKvCache` has it. */
export interface EvictionMapSource {
  /** Decoder layers. */
  readonly layers: number;
  /** Sequences B. */
  readonly batch: number;
  /** KV heads per layer. */
  readonly kvHeads: number;
  /** Positions processed so far. */
  readonly tokensSeen: number;
  /** The policy's window W (0 for the dense cache). */
  readonly policy: { readonly window: number };
  /** The paged storage: one layer's pages `b · kvHeads + h`, in page order. */
  readonly storage: { snapshot(layer: number): Promise<readonly StoredEntries[]> };
}

/** Per layer and KV head, the state of every position of one sequence. */
export interface EvictionMap {
  /** Positions seen (columns 0..tokensSeen−1). */
  tokensSeen: number;
  /** The window W the states were classified with. */
  window: number;
  /** Which sequence of the batch. */
  sequence: number;
  /** `[layers][kvHeads][tokensSeen]` states. */
  states: EntryState[][][];
}

/** A run of equal states along the positions of one page (`start` ≤ position < `end`). */
export interface EvictionRun {
  /** Layer. */
  layer: number;
  /** KV head. */
  head: number;
  /** First position of the run. */
  start: number;
  /** One past the last position. */
  end: number;
  /** The state of every position in the run. */
  state: EntryState;
}

/**
 * Classifies every position 0..tokensSeen−1 of one page from its stored entries.
 *
 * @param entries The page's stored positions and marks.
 * @param tokensSeen Positions processed so far.
 * @param window W: a marked entry stays visible for distances 0..W from the newest position.
 * @returns `[tokensSeen]` states.
 * @throws {RangeError} For a stored position outside 0..tokensSeen−1, a position stored twice, a
 *   mark other than 0 or 1, or positions and marks of different lengths.
 */
export function classifyPage(
  entries: StoredEntries,
  tokensSeen: number,
  window: number,
): EntryState[] {
  if (entries.positions.length !== entries.marks.length) {
    throw new RangeError(
      `classifyPage: ${entries.positions.length} positions but ${entries.marks.length} marks`,
    );
  }
  const out: EntryState[] = new Array(tokensSeen).fill("evicted");
  const seen = new Uint8Array(tokensSeen);
  const newest = tokensSeen - 1;
  entries.positions.forEach((p, s) => {
    const m = entries.marks[s];
    if (!(Number.isInteger(p) && p >= 0 && p < tokensSeen)) {
      throw new RangeError(`classifyPage: slot ${s} holds position ${p}, outside 0..${newest}`);
    }
    if (seen[p]) throw new RangeError(`classifyPage: position ${p} is stored twice`);
    if (m !== 0 && m !== 1) throw new RangeError(`classifyPage: slot ${s} has mark ${m}`);
    seen[p] = 1;
    out[p] = m === 0 ? "kept" : newest - p <= window ? "window" : "evicted";
  });
  return out;
}

/**
 * Reads the eviction map of one sequence back from a cache (one readback per layer). Call it
 * between steps, e.g. after a generation with a cache you own.
 *
 * @param cache A `PagedKvCache` (dense or DMS), or anything of {@linkcode EvictionMapSource}'s shape.
 * @param options `sequence`: which sequence of the batch (default 0).
 * @throws {RangeError} For a sequence outside the batch or an empty cache.
 */
export async function readEvictionMap(
  cache: EvictionMapSource,
  options: { sequence?: number } = {},
): Promise<EvictionMap> {
  const b = options.sequence ?? 0;
  if (!(Number.isInteger(b) && b >= 0 && b < cache.batch)) {
    throw new RangeError(`readEvictionMap: sequence must be in 0..${cache.batch - 1}, got ${b}`);
  }
  const T = cache.tokensSeen, W = cache.policy.window;
  if (T < 1) throw new RangeError("readEvictionMap: the cache has seen no tokens yet");
  const states: EntryState[][][] = [];
  for (let l = 0; l < cache.layers; l++) {
    const pages = await cache.storage.snapshot(l);
    const row: EntryState[][] = [];
    for (let h = 0; h < cache.kvHeads; h++) {
      row.push(classifyPage(pages[b * cache.kvHeads + h], T, W));
    }
    states.push(row);
  }
  return { tokensSeen: T, window: W, sequence: b, states };
}

/** Counts of each state per layer and head: `[layers][kvHeads]`. */
export function evictionCounts(map: EvictionMap): Record<EntryState, number>[][] {
  return map.states.map((heads) =>
    heads.map((row) => {
      const c: Record<EntryState, number> = { kept: 0, window: 0, evicted: 0 };
      for (const s of row) c[s]++;
      return c;
    })
  );
}

/** The map as runs of equal states, layer by layer, head by head, left to right. */
export function evictionRuns(map: EvictionMap): EvictionRun[] {
  const runs: EvictionRun[] = [];
  map.states.forEach((heads, layer) =>
    heads.forEach((row, head) => {
      let start = 0;
      for (let p = 1; p <= row.length; p++) {
        if (p === row.length || row[p] !== row[start]) {
          runs.push({ layer, head, start, end: p, state: row[start] });
          start = p;
        }
      }
    })
  );
  return runs;
}
