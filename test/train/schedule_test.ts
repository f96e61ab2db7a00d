import assert from "node:assert/strict";
import { alphaTarget, targetCompressionRatio } from "../../src/train/schedule.ts";

const REF = { initialCr: 1, finalCr: 16, finalStep: 510 };

Deno.test("targetCompressionRatio() starts at initialCr: step 0 gives α* = 0", () => {
  assert.equal(targetCompressionRatio(0, REF), 1);
  assert.equal(alphaTarget(0, REF), 0);
});

Deno.test("targetCompressionRatio() is linear in CR: +1 every 34 steps, CR 8 at step 238", () => {
  for (let k = 0; k <= 15; k++) {
    assert.ok(Math.abs(targetCompressionRatio(34 * k, REF) - (1 + k)) < 1e-12, `step ${34 * k}`);
  }
  assert.ok(Math.abs(targetCompressionRatio(238, REF) - 8) < 1e-12);
  assert.ok(Math.abs(alphaTarget(238, REF) - 0.875) < 1e-12);
  // Linear in CR, not in α*: halfway in steps is halfway in CR.
  assert.ok(Math.abs(targetCompressionRatio(255, REF) - 8.5) < 1e-12);
  assert.ok(Math.abs(alphaTarget(255, REF) - (1 - 1 / 8.5)) < 1e-12);
});

Deno.test("targetCompressionRatio() reaches finalCr at finalStep and stays there", () => {
  assert.equal(targetCompressionRatio(510, REF), 16);
  assert.equal(targetCompressionRatio(544, REF), 16);
  assert.equal(targetCompressionRatio(1e9, REF), 16);
  assert.equal(alphaTarget(600, REF), 1 - 1 / 16);
  const s = { initialCr: 2, finalCr: 8, finalStep: 100 };
  assert.equal(targetCompressionRatio(0, s), 2);
  assert.equal(alphaTarget(0, s), 0.5);
  assert.equal(targetCompressionRatio(50, s), 5);
  assert.equal(alphaTarget(100, s), 0.875);
});

Deno.test("targetCompressionRatio() with finalStep 0 is finalCr at once", () => {
  assert.equal(targetCompressionRatio(0, { initialCr: 1, finalCr: 4, finalStep: 0 }), 4);
});

Deno.test("targetCompressionRatio() rejects a negative step and CR below 1, naming the field", () => {
  assert.throws(() => targetCompressionRatio(-1, REF), /step must be/);
  assert.throws(() => targetCompressionRatio(0, { ...REF, finalCr: 0.5 }), /finalCr/);
  assert.throws(() => targetCompressionRatio(0, { ...REF, initialCr: NaN }), /initialCr/);
  assert.throws(() => targetCompressionRatio(0, { ...REF, finalStep: -3 }), /finalStep/);
});
