/**
 * `bench/_variants.ts`: the `--variants` spec of `bench/generate.ts` parsed into
 * flashDecodeDefaults sets, applied on top of the command's own defaults, and bad specs named.
 */

import assert from "node:assert/strict";
import { applyVariant, parseVariants } from "../bench/_variants.ts";
import { flashDecodeDefaults } from "../src/cache/paged_decode_plan.ts";

Deno.test("parseVariants reads key=value sets separated by ';', 'default' or '-' for the defaults", () => {
  const vs = parseVariants(
    "minKeys=64; - ;threads=256,combine=fused;early=on;early=off;default;wave=396;loads=8,early=on",
  );
  assert.deepEqual(vs.map((v) => v.label), [
    "minKeys=64",
    "-",
    "threads=256,combine=fused",
    "early=on",
    "early=off",
    "default",
    "wave=396",
    "loads=8,early=on",
  ]);
  assert.deepEqual(vs.map((v) => v.defaults), [
    { minKeys: 64 },
    {},
    { threads: 256, combine: "fused" },
    { earlyLoads: true },
    { earlyLoads: false },
    {},
    { wave: 396 },
    { loads: 8, earlyLoads: true },
  ]);
});

Deno.test("parseVariants names the bad part", () => {
  assert.throws(() => parseVariants("minKeys=0"), /minKeys must be an integer >= 1, got 0/);
  assert.throws(() => parseVariants("wave=0"), /wave must be an integer >= 1, got 0/);
  assert.throws(() => parseVariants("loads=-2"), /loads must be an integer >= 1, got -2/);
  assert.throws(() => parseVariants("threads=1.5"), /threads must be an integer >= 1, got 1.5/);
  assert.throws(() => parseVariants("combine=both"), /combine must be fused or dispatch, got both/);
  assert.throws(() => parseVariants("early=1"), /early must be on or off, got 1/);
  assert.throws(() => parseVariants("kernel=staged"), /unknown key "kernel" in "kernel=staged"/);
  assert.throws(() => parseVariants("minKeys"), /"minKeys" in "minKeys" is not key=value/);
  assert.throws(() => parseVariants(" ; "), /no variant/);
});

Deno.test("applyVariant sets exactly base plus the variant's defaults", () => {
  try {
    flashDecodeDefaults.workgroups = 7; // a leftover the variant must clear
    const [a, b] = parseVariants("minKeys=64,combine=fused;-");
    applyVariant(a, { maxKeys: 256, combine: "dispatch" });
    assert.deepEqual({ ...flashDecodeDefaults }, { maxKeys: 256, combine: "fused", minKeys: 64 });
    applyVariant(b, { maxKeys: 256 });
    assert.deepEqual({ ...flashDecodeDefaults }, { maxKeys: 256 });
  } finally {
    applyVariant({ label: "-", defaults: {} });
  }
  assert.deepEqual({ ...flashDecodeDefaults }, {});
});
