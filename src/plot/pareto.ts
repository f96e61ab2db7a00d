/**
 * Accuracy against a budget (KV-cache token reads, or peak KV tokens in memory), as the paper
 * plots inference-time hyper-scaling: every configuration a point, coloured by policy, and one
 * line per policy through its Pareto frontier (the points the caller marks `frontier`: the
 * harness in src/eval/hyperscale.ts computes them). The x axis is logarithmic by default: the
 * budgets of a W × L × CR grid span orders of magnitude.
 *
 * @example Dense and DMS, the frontier of each marked
 * ```ts
 * import { paretoSvg } from "./pareto.ts";
 * const svg = await paretoSvg([
 *   { policy: "dense", cost: 4000, accuracy: 0.6, frontier: true },
 *   { policy: "dense", cost: 16000, accuracy: 0.8, frontier: true },
 *   { policy: "dms", cost: 1000, accuracy: 0.55, frontier: true },
 *   { policy: "dms", cost: 2000, accuracy: 0.5, frontier: false },
 *   { policy: "dms", cost: 4000, accuracy: 0.85, frontier: true },
 * ], { xTitle: "KV-cache token reads per problem" });
 * console.log(svg.startsWith("<svg")); // true
 * ```
 *
 * @module
 */

import { renderSvg, type VegaLiteSpec } from "./render.ts";

/** One configuration: its policy, the budget it spent and the accuracy it bought. */
export interface ParetoPoint {
  /** Series (one colour and one frontier line each). */
  policy: string;
  /** Budget spent (x). */
  cost: number;
  /** Accuracy in [0, 1] (y). */
  accuracy: number;
  /** Whether the point is on its policy's Pareto frontier (drawn through by the line). */
  frontier: boolean;
}

/** Options of {@linkcode paretoSpec}. */
export interface ParetoChartOptions {
  /** Title of the x axis (the budget). */
  xTitle: string;
  /** Chart title (default "Accuracy vs " + xTitle). */
  title?: string;
  /** Logarithmic x axis (default true; every cost must then be > 0). */
  logX?: boolean;
}

function checkPoints(points: readonly ParetoPoint[], logX: boolean): void {
  if (points.length === 0) throw new RangeError("paretoSpec: no points to plot");
  points.forEach((p, i) => {
    if (typeof p.policy !== "string" || p.policy === "") {
      throw new TypeError(`paretoSpec: point ${i}: policy must be a non-empty string`);
    }
    const minCost = logX ? "> 0 (log axis)" : ">= 0";
    if (!(Number.isFinite(p.cost) && (logX ? p.cost > 0 : p.cost >= 0))) {
      throw new RangeError(
        `paretoSpec: point ${i} (${p.policy}): cost must be a finite number ${minCost}, got ${p.cost}`,
      );
    }
    if (!(Number.isFinite(p.accuracy) && p.accuracy >= 0 && p.accuracy <= 1)) {
      throw new RangeError(
        `paretoSpec: point ${i} (${p.policy}): accuracy must be in [0, 1], got ${p.accuracy}`,
      );
    }
  });
}

/**
 * The Vega-Lite specification: a point per configuration (hollow off the frontier), a line per
 * policy through its frontier points by increasing cost, y = accuracy on [0, 1].
 *
 * @param points Every configuration of every policy, any order.
 * @param opts Axis title, chart title, log x.
 * @throws {RangeError} For no points, a cost that is not finite (or not > 0 on a log axis), an
 *   accuracy outside [0, 1] (naming the point).
 */
export function paretoSpec(points: readonly ParetoPoint[], opts: ParetoChartOptions): VegaLiteSpec {
  const logX = opts.logX ?? true;
  checkPoints(points, logX);
  const values = [...points].sort((a, b) =>
    a.policy < b.policy ? -1 : a.policy > b.policy ? 1 : a.cost - b.cost
  );
  const x = {
    field: "cost",
    type: "quantitative",
    title: opts.xTitle,
    scale: logX ? { type: "log" } : { zero: true },
  };
  const y = {
    field: "accuracy",
    type: "quantitative",
    title: "accuracy",
    scale: { domain: [0, 1] },
  };
  const color = { field: "policy", type: "nominal", title: "policy" };
  return {
    title: opts.title ?? `Accuracy vs ${opts.xTitle}`,
    width: 420,
    height: 280,
    data: { values },
    layer: [
      {
        transform: [{ filter: "datum.frontier" }],
        mark: { type: "line" },
        encoding: { x, y, color, order: { field: "cost", type: "quantitative" } },
      },
      {
        mark: { type: "point", size: 40 },
        encoding: {
          x,
          y,
          color,
          fill: {
            condition: { test: "datum.frontier", field: "policy", type: "nominal" },
            value: "transparent",
          },
        },
      },
    ],
  };
}

/** Renders {@linkcode paretoSpec} to a standalone SVG document. */
export function paretoSvg(
  points: readonly ParetoPoint[],
  opts: ParetoChartOptions,
): Promise<string> {
  return renderSvg(paretoSpec(points, opts));
}
