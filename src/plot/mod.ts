/**
 * `@hyperscale/dms/plot`: the project's pictures as SVG — charts are Vega-Lite specifications
 * rendered headless ({@linkcode renderSvg}): the eviction map of a cache
 * ({@linkcode readEvictionMap}, {@linkcode evictionMapSvg}), compression over generation
 * ({@linkcode compressionSvg}), accuracy against a KV budget with Pareto frontiers
 * ({@linkcode paretoSvg}) and the diagram of delayed eviction ({@linkcode delayedEvictionSvg}).
 *
 * @example
 * ```ts ignore
 * import { renderSvg } from "@hyperscale/dms/plot";
 * const svg = await renderSvg({ data: { values: [] }, mark: "point" });
 * ```
 *
 * @module
 */

export { renderSvg, type VegaLiteSpec } from "./render.ts";
export {
  classifyPage,
  ENTRY_STATES,
  type EntryState,
  evictionCounts,
  type EvictionMap,
  type EvictionMapSource,
  evictionMapSpec,
  evictionMapSvg,
  type EvictionRun,
  evictionRuns,
  readEvictionMap,
  type StoredEntries,
} from "./eviction_map.ts";
export { type CompressionPoint, compressionSpec, compressionSvg } from "./compression.ts";
export { type ParetoChartOptions, type ParetoPoint, paretoSpec, paretoSvg } from "./pareto.ts";
export {
  delayedEvictionCells,
  type DelayedEvictionOptions,
  delayedEvictionSpec,
  delayedEvictionSvg,
  DIAGRAM_STATES,
  type DiagramCell,
  type DiagramState,
} from "./diagram.ts";
