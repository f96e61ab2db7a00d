/**
 * SVG rendering of charts: a Vega-Lite specification in, an SVG string out, through the
 * maintained `vega` / `vega-lite` packages (headless, no DOM, no canvas). Every picture of the
 * project (eviction maps, compression over generation, Pareto plots) is a spec built by one
 * module of this folder and rendered here.
 *
 * @example
 * ```ts
 * import { renderSvg } from "./render.ts";
 * const svg = await renderSvg({
 *   data: { values: [{ x: 1, y: 2 }, { x: 2, y: 3 }] },
 *   mark: "line",
 *   encoding: {
 *     x: { field: "x", type: "quantitative" },
 *     y: { field: "y", type: "quantitative" },
 *   },
 * });
 * console.log(svg.startsWith("<svg")); // true
 * ```
 *
 * @module
 */

import * as vega from "vega";
import * as vegaLite from "vega-lite";

/** A Vega-Lite (v6) top-level specification, as plain JSON. */
export type VegaLiteSpec = Record<string, unknown>;

/**
 * Renders a Vega-Lite specification to a standalone SVG document (white background).
 *
 * @throws {Error} When Vega-Lite rejects the specification (its message, prefixed).
 */
export async function renderSvg(spec: VegaLiteSpec): Promise<string> {
  let compiled;
  try {
    compiled = vegaLite.compile({ background: "white", ...spec } as vegaLite.TopLevelSpec).spec;
  } catch (e) {
    throw new Error(`renderSvg: invalid chart specification: ${(e as Error).message}`, {
      cause: e,
    });
  }
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
