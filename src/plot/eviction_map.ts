/**
 * The eviction map: for one sequence, per layer and KV head, what became of every position the
 * cache has seen — **kept** (stored, unmarked: visible to every later query), **window** (stored
 * and marked for eviction, but still inside the window W, so still read by attention: SPEC §5.1
 * delayed eviction) or **evicted** (no longer visible: its slot was recycled, or it was dropped
 * by prefill compaction).
 *
 * The data comes from a real read-back of the paged storage ({@linkcode readEvictionMap}: each
 * page's stored positions and marks, one readback per layer); a position absent from a page is
 * evicted. The classification is relative to the newest processed position `t = tokensSeen − 1`:
 * a stored entry with mark 1 is in the window when `t − position ≤ W`. The newest position has
 * no mark yet (its decision comes with the next token, SPEC §2), so it is always kept.
 *
 * This floor sits below the caches, so {@linkcode EvictionMapSource} describes the cache by its
 * shape: a `PagedKvCache` (dense or DMS, `src/cache/paged_kv_cache.ts`) fits it as it is.
 * Left-padded positions of a batched prompt are never stored, so they show as evicted.
 *
 * @example Read the map after a generation and write it as SVG
 * ```ts ignore
 * import { createCacheFor, generate } from "../generate.ts";
 * const cache = createCacheFor(model, 1, "dms");
 * for await (const _ of generate(model, [prompt], { maxTokens: 32, cache })) { }
 * const map = await readEvictionMap(cache as PagedKvCache);
 * await Deno.writeTextFile("eviction_map.svg", await evictionMapSvg(map));
 * cache.dispose();
 * ```
 *
 * @module
 */

import { renderSvg, type VegaLiteSpec } from "./render.ts";
import { ENTRY_STATES, type EntryState, type EvictionMap, evictionRuns } from "./data.ts";

export {
  classifyPage,
  ENTRY_STATES,
  type EntryState,
  evictionCounts,
  type EvictionMap,
  type EvictionMapSource,
  type EvictionRun,
  evictionRuns,
  readEvictionMap,
  type StoredEntries,
} from "./data.ts";

/** Colours of the states: kept dark blue, window amber, evicted light grey. */
const COLORS: Record<EntryState, string> = {
  kept: "#1f4e8c",
  window: "#f2a900",
  evicted: "#e4e4e4",
};

/**
 * The Vega-Lite specification of the map: one row of panels per layer, one band per KV head,
 * positions along x, one rectangle per run of equal states ({@linkcode evictionRuns}).
 *
 * @param map The map.
 * @param title Chart title (default: tokens, window and sequence).
 */
export function evictionMapSpec(map: EvictionMap, title?: string): VegaLiteSpec {
  const width = Math.min(900, Math.max(300, 3 * map.tokensSeen));
  return {
    title: title ??
      `Eviction map: ${map.tokensSeen} positions, window W = ${map.window}, sequence ${map.sequence}`,
    data: { values: evictionRuns(map) },
    facet: {
      row: {
        field: "layer",
        type: "ordinal",
        header: {
          labelExpr: "'layer ' + datum.value",
          labelAngle: 0,
          labelAlign: "right",
          title: null,
        },
      },
    },
    spec: {
      width,
      height: { step: 14 },
      mark: { type: "rect", stroke: null },
      encoding: {
        x: {
          field: "start",
          type: "quantitative",
          title: "position",
          scale: { domain: [0, map.tokensSeen], nice: false, zero: true },
        },
        x2: { field: "end" },
        y: {
          field: "head",
          type: "ordinal",
          title: null,
          axis: { labelExpr: "'KV head ' + datum.value" },
        },
        color: {
          field: "state",
          type: "nominal",
          title: "entry",
          scale: { domain: [...ENTRY_STATES], range: ENTRY_STATES.map((s) => COLORS[s]) },
        },
        tooltip: [
          { field: "state" },
          { field: "start", title: "from" },
          { field: "end", title: "to (excl.)" },
        ],
      },
    },
  };
}

/** Renders the map to a standalone SVG document ({@linkcode evictionMapSpec}). */
export function evictionMapSvg(map: EvictionMap, title?: string): Promise<string> {
  return renderSvg(evictionMapSpec(map, title));
}
