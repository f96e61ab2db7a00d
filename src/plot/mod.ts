/**
 * `@hyperscale/dms/plot`: the project's pictures as SVG — charts are Vega-Lite specifications
 * rendered headless ({@linkcode renderSvg}).
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
