/**
 * Pareto frontiers of accuracy against a budget: the configurations no other configuration beats
 * — none costs at most as much and is at least as accurate, with one of the two strict. The
 * paper reports inference-time hyper-scaling this way (SPEC §8: accuracy-vs-budget Pareto fronts,
 * one per method), with the budget in KV-cache token reads or in peak KV tokens.
 *
 * @example
 * ```ts
 * import { paretoFrontier } from "./pareto.ts";
 * const front = paretoFrontier([
 *   { cost: 10, accuracy: 0.5 },
 *   { cost: 20, accuracy: 0.4 }, // dominated: costs more, less accurate
 *   { cost: 30, accuracy: 0.9 },
 * ]);
 * console.log(front.map((p) => p.cost)); // [10, 30]
 * ```
 *
 * @module
 */

/** A point to rank: a budget spent and the accuracy it bought. */
export interface CostAccuracy {
  /** Budget spent (lower is better). */
  cost: number;
  /** Accuracy bought (higher is better). */
  accuracy: number;
}

/**
 * The Pareto frontier of `points`: every point that no other point dominates (cost ≤ and
 * accuracy ≥, one of them strict), sorted by cost; of several equal points the first is kept.
 * Along the frontier cost and accuracy both rise strictly.
 *
 * @param points Any objects with a finite `cost` and `accuracy` (returned as they are).
 * @returns The frontier, by increasing cost.
 * @throws {RangeError} For a cost or accuracy that is not finite (naming the point).
 */
export function paretoFrontier<T extends CostAccuracy>(points: readonly T[]): T[] {
  points.forEach((p, i) => {
    if (!Number.isFinite(p.cost) || !Number.isFinite(p.accuracy)) {
      throw new RangeError(
        `paretoFrontier: point ${i} needs a finite cost and accuracy, got ${p.cost}, ${p.accuracy}`,
      );
    }
  });
  // by cost, then the most accurate first, then input order: a sweep keeps each new best
  const order = points.map((p, i) => ({ p, i })).sort((a, b) =>
    a.p.cost - b.p.cost || b.p.accuracy - a.p.accuracy || a.i - b.i
  );
  const front: T[] = [];
  for (const { p } of order) {
    if (front.length === 0 || p.accuracy > front[front.length - 1].accuracy) front.push(p);
  }
  return front;
}
