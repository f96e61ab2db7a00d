/**
 * The WebGPU implementation on NVIDIA's golden vectors (vendored in
 * `testdata/conformance`, the folder `runConformance()` uses by default): the
 * decoder, the decision kernels and the paged DMS cache, case by case, with
 * the tolerances recorded in each `case.json`.
 */
import assert from "node:assert/strict";
import {
  DEFAULT_CONFORMANCE_DIR,
  findCases,
  formatCaseReport,
  GOLDEN_CASES,
  runConformance,
} from "../../src/eval/conformance.ts";
import { gpuBackend } from "../../src/eval/gpu_backend.ts";
import { GPU_TEST } from "../_util.ts";

const names = (await findCases(DEFAULT_CONFORMANCE_DIR)).map((c) => c.name);

Deno.test("the default conformance folder holds at least the ten golden cases (no silent pass)", () => {
  assert.ok(names.length >= 10, `only ${names.length} cases in ${DEFAULT_CONFORMANCE_DIR.href}`);
  assert.deepEqual(GOLDEN_CASES.filter((n) => !names.includes(n)), [], "golden cases missing");
});

for (const name of names) {
  Deno.test({
    name: `golden case ${name} passes on the GPU backend`,
    ...GPU_TEST,
    fn: async () => {
      const report = await runConformance(undefined, {
        backend: gpuBackend,
        only: name,
        log: () => {},
      });
      assert.equal(report.cases.length, 1, `case ${name} not found`);
      const c = report.cases[0];
      assert.ok(c.ok, formatCaseReport(c, { verbose: true }));
      const inputs = [
        "input_ids",
        "noise",
        ...(name.startsWith("C") ? ["q", "k", "v", "decisions", "attn_mask"] : []),
      ];
      assert.deepEqual(
        c.notProduced.filter((n) => !inputs.includes(n)),
        [],
        "every expected tensor is produced",
      );
    },
  });
}
