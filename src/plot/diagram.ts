/**
 * The README's diagram of delayed eviction (SPEC §2, §5.1): a grid of decode steps (rows, the
 * query at position t) by keys (columns, position i ≤ t). The decision computed at step t
 * marks key t − 1 (shift by one); the marked key stays visible to the queries at distances
 * 0..W and leaves the cache when token i + W + 1 arrives, before that token's attention.
 *
 * The cells follow the §5.1 rule directly (this floor sits below `src/dms/`; the test checks
 * them against `src/dms/oracle.ts`). A key is drawn "marked" from the step that computed its
 * mark on: at step t the mark of key i is known iff i + 1 ≤ t.
 *
 * @example The default picture: 8 tokens, W = 3, the decision at t = 3 marks token 2
 * ```ts
 * import { delayedEvictionCells, delayedEvictionSvg } from "./diagram.ts";
 * const cells = delayedEvictionCells();
 * console.log(cells.find((c) => c.query === 6 && c.key === 2)?.state); // "evicted"
 * const svg = await delayedEvictionSvg();
 * ```
 *
 * @module
 */

import { renderSvg, type VegaLiteSpec } from "./render.ts";

/** State of key i as seen by the query at step t. */
export type DiagramState = "visible" | "marked, in window" | "evicted";

/** The diagram's states in legend order. */
export const DIAGRAM_STATES: readonly DiagramState[] = Object.freeze([
  "visible",
  "marked, in window",
  "evicted",
]);

/** One cell: the key at `key` as seen by the query at step `query` (key ≤ query). */
export interface DiagramCell {
  /** Decode step t (the query's position). */
  query: number;
  /** Key position i ≤ t. */
  key: number;
  /** What the query sees of the key. */
  state: DiagramState;
  /** A short annotation drawn in the cell (`|` breaks the line; "" for none). */
  note: string;
}

/** Options of the delayed-eviction diagram. */
export interface DelayedEvictionOptions {
  /**
   * Hard decisions d[t] per token (0 keep, 1 evict); `d[t]` marks key t − 1, `d[0]` decides
   * nothing. Default: 8 tokens with d[3] = 1 (token 2 marked).
   */
  decisions?: readonly number[];
  /** W: a marked key is visible for distances 0..W (default 3). */
  window?: number;
}

/**
 * The cells of the diagram, row by row (t = 0, 1, …), each row keys 0..t.
 *
 * @throws {RangeError} For no decisions, a decision other than 0 or 1, or a window that is
 *   not an integer ≥ 0.
 */
export function delayedEvictionCells(options: DelayedEvictionOptions = {}): DiagramCell[] {
  const d = options.decisions ?? [0, 0, 0, 1, 0, 0, 0, 0];
  const W = options.window ?? 3;
  if (d.length === 0) throw new RangeError("delayedEvictionCells: decisions is empty");
  d.forEach((x, t) => {
    if (x !== 0 && x !== 1) {
      throw new RangeError(`delayedEvictionCells: decisions[${t}] must be 0 or 1, got ${x}`);
    }
  });
  if (!(Number.isInteger(W) && W >= 0)) {
    throw new RangeError(`delayedEvictionCells: window must be an integer >= 0, got ${W}`);
  }
  const cells: DiagramCell[] = [];
  for (let t = 0; t < d.length; t++) {
    for (let i = 0; i <= t; i++) {
      const marked = i + 1 <= t && d[i + 1] === 1; // mark(i) = d(i + 1), known from step i + 1
      const state: DiagramState = !marked
        ? "visible"
        : t - i <= W
        ? "marked, in window"
        : "evicted";
      let note = "";
      if (marked && t === i + 1) note = `d[${t}]=1|marks ${i}`;
      else if (marked && t === i + W + 1) note = `${i}|leaves`;
      cells.push({ query: t, key: i, state, note });
    }
  }
  return cells;
}

const COLORS: Record<DiagramState, string> = {
  visible: "#1f4e8c",
  "marked, in window": "#f2a900",
  evicted: "#e4e4e4",
};

/**
 * The Vega-Lite specification: square cells (rect), their annotations (text), the window in
 * the title.
 */
export function delayedEvictionSpec(options: DelayedEvictionOptions = {}): VegaLiteSpec {
  const cells = delayedEvictionCells(options);
  const T = (options.decisions ?? [0, 0, 0, 1, 0, 0, 0, 0]).length;
  const W = options.window ?? 3;
  const axis = (title: string) => ({
    field: "",
    type: "ordinal",
    title,
    scale: { domain: Array.from({ length: T }, (_, i) => i) },
  });
  return {
    title: {
      text: `Delayed eviction (window W = ${W})`,
      subtitle: [
        "the decision at step t marks token t − 1;",
        `a marked token stays visible for W = ${W} more steps, then leaves the cache`,
      ],
    },
    data: { values: cells },
    width: { step: 46 },
    height: { step: 34 },
    encoding: {
      x: { ...axis("key position i"), field: "key", axis: { orient: "top", labelAngle: 0 } },
      y: { ...axis("decode step t (the query)"), field: "query" },
    },
    layer: [
      {
        mark: { type: "rect", stroke: "white", strokeWidth: 2 },
        encoding: {
          color: {
            field: "state",
            type: "nominal",
            title: "key as seen by the query",
            scale: { domain: [...DIAGRAM_STATES], range: DIAGRAM_STATES.map((s) => COLORS[s]) },
            legend: { orient: "bottom", titleLimit: 400, labelLimit: 200 },
          },
        },
      },
      {
        transform: [{ filter: "datum.note !== ''" }],
        mark: { type: "text", fontSize: 9, color: "black", lineBreak: "|" },
        encoding: { text: { field: "note" } },
      },
    ],
  };
}

/** Renders {@linkcode delayedEvictionSpec} to a standalone SVG document. */
export function delayedEvictionSvg(options: DelayedEvictionOptions = {}): Promise<string> {
  return renderSvg(delayedEvictionSpec(options));
}
