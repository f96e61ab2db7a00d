/**
 * The `train_step` golden cases (vendored in `testdata/conformance-train`) on
 * the float64 CPU reference of one training step, and how a backend without
 * `trainStep` is reported.
 */

import assert from "node:assert/strict";
import {
  type ConformanceBackend,
  cpuBackend,
  DEFAULT_CONFORMANCE_TRAIN_DIR,
  findCases,
  formatCaseReport,
  formatSummary,
  GOLDEN_TRAIN_CASES,
  loadCase,
  runConformance,
} from "../../src/eval/conformance.ts";

const DIR = new URL("../../testdata/conformance-train/", import.meta.url).pathname;

Deno.test("the three train_step cases are vendored and found", async () => {
  assert.equal(DEFAULT_CONFORMANCE_TRAIN_DIR.pathname, DIR);
  const names = (await findCases(DEFAULT_CONFORMANCE_TRAIN_DIR)).map((c) => c.name);
  assert.deepEqual(names, [...GOLDEN_TRAIN_CASES]);
  assert.deepEqual(names, [
    "D1_grad_adapter_head",
    "D2_grad_qneuron_layer_b2",
    "D3_grad_adapter_head_defaults_tied",
  ]);
});

Deno.test("D1 and D2 pass on the CPU backend, every tensor compared", async () => {
  const report = await runConformance(DEFAULT_CONFORMANCE_TRAIN_DIR, {
    only: ["D1_grad_adapter_head", "D2_grad_qneuron_layer_b2"],
  });
  assert.equal(report.cases.length, 2);
  for (const c of report.cases) {
    assert.ok(c.ok, formatCaseReport(c, { verbose: true }));
    assert.equal(c.kind, "train_step");
    assert.deepEqual([...c.notProduced].sort(), ["input_ids", "noise"]);
    assert.ok(c.comparisons.length >= 80, `${c.comparisons.length} tensors compared`);
  }
});

Deno.test("D3 (scale 100, tau 0.1): our step equals NVIDIA's float64 mirror, outside two per-tensor tolerances its float32 run misses", async () => {
  const loaded = await loadCase(`${DIR}D3_grad_adapter_head_defaults_tied`);
  assert.equal(loaded.kind, "train_step");
  if (loaded.kind !== "train_step") return;
  const out = await cpuBackend.trainStep!(loaded.case);
  const maxDiff = (n: string): number => {
    const a = out[n].data, e = loaded.expected.get(n)!.data;
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - e[i]));
    return m;
  };
  // case.json → observed_max_abs_diff: the float32 reference vs an independent float64 mirror
  const mirror = loaded.case.json.observed_max_abs_diff as Record<string, number>;
  assert.ok(Math.abs(maxDiff("logits") - mirror.logits_vs_f64_mirror) < 1e-11);
  const worst = `grad.${mirror.grad_worst_tensor}`;
  assert.ok(Math.abs(maxDiff(worst) - mirror.grad_max_abs_diff_vs_f64_mirror) < 1e-11);
  const report = await runConformance(DEFAULT_CONFORMANCE_TRAIN_DIR, {
    only: "D3_grad_adapter_head_defaults_tied",
  });
  const c = report.cases[0];
  const failing = c.comparisons.filter((x) => !x.ok).map((x) => x.name);
  assert.deepEqual(failing, [
    "grad.model.layers.0.self_attn.dms_proj_alpha.weight",
    "grad.model.layers.1.mlp.up_proj.weight",
  ], formatCaseReport(c, { verbose: true }));
  for (const x of c.comparisons.filter((x) => !x.ok)) assert.ok(x.maxAbsErr < 1e-6, x.name);
});

Deno.test("a backend without trainStep reports train_step cases as NOT SUPPORTED, never passed", async () => {
  const { trainStep: _, ...rest } = cpuBackend;
  const backend: ConformanceBackend = { ...rest, name: "forward-only" };
  const lines: string[] = [];
  const report = await runConformance(DEFAULT_CONFORMANCE_TRAIN_DIR, {
    backend,
    only: "D1_grad_adapter_head",
    log: (l) => lines.push(l),
  });
  assert.equal(report.passed, 0);
  assert.equal(report.failed, 0);
  assert.equal(report.unsupported, 1);
  assert.equal(report.ok, false);
  assert.equal(
    lines[0],
    "NOT SUPPORTED D1_grad_adapter_head  kind train_step is not supported by backend forward-only yet",
  );
  assert.equal(formatSummary(report), "conformance: 0 passed, 0 failed, 1 not supported");
});

Deno.test("a list of folders runs both vendored folders in one report", async () => {
  const report = await runConformance([DEFAULT_CONFORMANCE_TRAIN_DIR, DIR], {
    only: "D2_grad_qneuron_layer_b2",
  });
  assert.deepEqual(report.cases.map((c) => [c.name, c.ok]), [
    ["D2_grad_qneuron_layer_b2", true],
    ["D2_grad_qneuron_layer_b2", true],
  ]);
});

Deno.test("the AdamW check fails an optimizer without bias correction (the check can fail)", async () => {
  const loaded = await loadCase(`${DIR}D1_grad_adapter_head`);
  if (loaded.kind !== "train_step") throw new Error("expected a train_step case");
  const out = await cpuBackend.trainStep!(loaded.case);
  // replay the first step without bias correction: w − lr·m/(√v + eps) with m = (1−β1)g, v = (1−β2)g²
  const { lr, betas, eps, clipGradNorm } = loaded.case.params.adamw;
  let sq = 0;
  for (const [, g] of loaded.case.optimizerGradients) for (const x of g.data) sq += x * x;
  const coef = Math.min(1, clipGradNorm / (Math.sqrt(sq) + 1e-6));
  const bad = { ...out };
  for (const [name, g] of loaded.case.optimizerGradients) {
    const w = loaded.case.weights.get(name)!.data, step = new Float64Array(w.length);
    for (let i = 0; i < w.length; i++) {
      const gi = g.data[i] * coef;
      const m = (1 - betas[0]) * gi, v = (1 - betas[1]) * gi * gi;
      step[i] = w[i] - lr * m / (Math.sqrt(v) + eps);
    }
    bad[`adamw1.${name}`] = { shape: [...g.shape], data: step };
  }
  const backend: ConformanceBackend = { ...cpuBackend, trainStep: () => Promise.resolve(bad) };
  const report = await runConformance(DEFAULT_CONFORMANCE_TRAIN_DIR, {
    backend,
    only: "D1_grad_adapter_head",
  });
  const failing = report.cases[0].comparisons.filter((c) => !c.ok).map((c) => c.name);
  assert.ok(failing.length > 0 && failing.every((n) => n.startsWith("adamw1.")), failing.join());
});
