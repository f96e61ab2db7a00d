import assert from "node:assert/strict";
import fc from "fast-check";
import {
  compressionRatioGetCr,
  isVisible,
  marksFromDecisions,
  NaiveTracker,
  retainedCount,
  targetFracToClose,
  trainFarBias,
  visibilityMask,
} from "../../src/dms/oracle.ts";

Deno.test("marksFromDecisions() shifts by one: d[t] marks key t-1 and the newest key is unmarked", () => {
  assert.deepEqual([...marksFromDecisions([1, 0, 1, 1])], [0, 1, 1, 0]);
  assert.deepEqual([...marksFromDecisions([1])], [0]);
});

Deno.test("isVisible() keeps a marked key for distances 0..W and drops it at W+1", () => {
  const W = 4;
  for (let q = 10; q <= 10 + W; q++) assert.equal(isVisible(q, 10, 1, W), true, `q=${q}`);
  assert.equal(isVisible(10 + W + 1, 10, 1, W), false);
  assert.equal(isVisible(10 + 1000, 10, 0, W), true);
  assert.equal(isVisible(9, 10, 0, W), false);
});

Deno.test("the naive tracker holds exactly the keys the next query sees (SPEC §5.1 vs §7.4)", () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 1, maxLength: 80 }),
      fc.integer({ min: 0, max: 12 }),
      (d, W) => {
        const tr = new NaiveTracker(W + 1);
        for (let t = 0; t < d.length; t++) {
          tr.push(d[t]);
          const mark = marksFromDecisions(d.slice(0, t + 1));
          const expect: number[] = [];
          for (let i = 0; i <= t; i++) if (isVisible(t, i, mark[i], W)) expect.push(i);
          assert.deepEqual(tr.positions(), expect, `t=${t}`);
          assert.equal(retainedCount(d, t, W), expect.length);
        }
      },
    ),
    { numRuns: 200 },
  );
});

Deno.test("visibilityMask() hides padding keys and rejects a negative window", () => {
  const m = visibilityMask([0, 0, 0], 1, [0, 1, 1]);
  assert.deepEqual([...m], [0, 0, 0, 0, 1, 0, 0, 1, 1]);
  assert.throws(() => visibilityMask([0], -1), RangeError);
});

Deno.test("trainFarBias() uses the next position's logit and 0 for the last key", () => {
  const b = trainFarBias([5, -3, 2]);
  assert.ok(Math.abs(b[0] - Math.log(1 / (1 + Math.exp(-3)))) < 1e-12);
  assert.ok(Math.abs(b[2] - Math.log(0.5)) < 1e-12);
});

Deno.test("get_cr averages per-page fractions before inverting", () => {
  assert.equal(compressionRatioGetCr([[5, 10]], 10), 1 / 0.75);
});

Deno.test("the CR schedule is linear in CR: 1 -> 16 over 510 steps reaches CR 8 at step 238", () => {
  assert.equal(targetFracToClose(0, 1, 16, 510), 0);
  assert.ok(Math.abs(targetFracToClose(238, 1, 16, 510) - (1 - 1 / 8)) < 1e-12);
});
