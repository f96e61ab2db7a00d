/**
 * The WebGPU implementation on NVIDIA's golden vectors (`shared/conformance`):
 * the decoder, the decision kernels and the paged DMS cache, case by case,
 * with the tolerances recorded in each `case.json`.
 */
import assert from "node:assert/strict";
import { findCases, formatCaseReport, runConformance } from "../../src/eval/conformance.ts";
import { gpuBackend } from "../../src/eval/gpu_backend.ts";
import { GPU_TEST } from "../_util.ts";

const SHARED = new URL("../../../shared/conformance/", import.meta.url).pathname;
const names = (await findCases(SHARED)).map((c) => c.name);

for (const name of names) {
  Deno.test({
    name: `golden case ${name} passes on the GPU backend`,
    ...GPU_TEST,
    fn: async () => {
      const report = await runConformance(SHARED, {
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
