/**
 * Compression over generation: the live KV entries and the compression ratio after each step
 * of a generation, one line per cache policy (dense vs DMS), side by side. The points are
 * gathered while streaming — `cache.stats()` between chunks of `generate()` with a cache the
 * caller owns, as `generateText` (src/text.ts) does with `trace: true` — so this module only
 * draws them.
 *
 * @example Two policies, three points each
 * ```ts
 * import { compressionSvg } from "./compression.ts";
 * const svg = await compressionSvg([
 *   { policy: "dense", tokensSeen: 16, liveTokens: 64, compressionRatio: 1 },
 *   { policy: "dense", tokensSeen: 32, liveTokens: 128, compressionRatio: 1 },
 *   { policy: "dense", tokensSeen: 48, liveTokens: 192, compressionRatio: 1 },
 *   { policy: "dms", tokensSeen: 16, liveTokens: 60, compressionRatio: 1.07 },
 *   { policy: "dms", tokensSeen: 32, liveTokens: 80, compressionRatio: 1.6 },
 *   { policy: "dms", tokensSeen: 48, liveTokens: 90, compressionRatio: 2.13 },
 * ]);
 * console.log(svg.startsWith("<svg")); // true
 * ```
 *
 * @module
 */

import { renderSvg, type VegaLiteSpec } from "./render.ts";
import type { CompressionPoint } from "./data.ts";

export type { CompressionPoint } from "./data.ts";

/** Checks the points: at least one, every number finite and non-negative, ratios ≥ 0. */
function checkPoints(points: readonly CompressionPoint[]): void {
  if (points.length === 0) throw new RangeError("compressionSpec: no points to plot");
  points.forEach((p, i) => {
    if (typeof p.policy !== "string" || p.policy === "") {
      throw new TypeError(`compressionSpec: point ${i}: policy must be a non-empty string`);
    }
    for (const key of ["tokensSeen", "liveTokens", "compressionRatio"] as const) {
      const x = p[key];
      if (!(Number.isFinite(x) && x >= 0)) {
        throw new RangeError(
          `compressionSpec: point ${i} (${p.policy}): ${key} must be a finite number >= 0, got ${x}`,
        );
      }
    }
  });
}

/**
 * The Vega-Lite specification: two panels sharing the x axis (positions processed) and the
 * colour legend (policy): live KV entries, and the compression ratio (get_cr).
 *
 * @param points The points of every policy, in any order.
 * @param title Chart title (default "Compression over generation").
 * @throws {RangeError} For no points or a number that is not finite and ≥ 0 (naming the point).
 */
export function compressionSpec(
  points: readonly CompressionPoint[],
  title = "Compression over generation",
): VegaLiteSpec {
  checkPoints(points);
  const values = [...points].sort((a, b) =>
    a.policy < b.policy ? -1 : a.policy > b.policy ? 1 : a.tokensSeen - b.tokensSeen
  );
  const panel = (field: keyof CompressionPoint, yTitle: string) => ({
    width: 320,
    height: 200,
    mark: { type: "line", point: true },
    encoding: {
      x: { field: "tokensSeen", type: "quantitative", title: "positions processed" },
      y: { field, type: "quantitative", title: yTitle },
      color: { field: "policy", type: "nominal", title: "cache" },
    },
  });
  return {
    title,
    data: { values },
    hconcat: [
      panel("liveTokens", "live KV entries (all layers and heads)"),
      panel("compressionRatio", "compression ratio (get_cr)"),
    ],
  };
}

/** Renders {@linkcode compressionSpec} to a standalone SVG document. */
export function compressionSvg(
  points: readonly CompressionPoint[],
  title?: string,
): Promise<string> {
  return renderSvg(compressionSpec(points, title));
}
