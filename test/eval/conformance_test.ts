/**
 * The conformance runner on NVIDIA's golden vectors (vendored in
 * `testdata/conformance`) with the float64 CPU reference as backend: the
 * independent check that our reading of SPEC.md matches the reference. Plus
 * the runner's own behaviour on broken copies of a case (perturbed value,
 * missing file, unknown kind), and the cases read over HTTP.
 */

import assert from "node:assert/strict";
import {
  decodeSafetensors,
  type SafetensorsDtype,
  writeSafetensors,
} from "../../src/io/safetensors.ts";
import { compareTensor, EXACT, parseTolerances } from "../../src/eval/compare.ts";
import {
  type CaseReport,
  cpuBackend,
  DEFAULT_CONFORMANCE_DIR,
  findCases,
  formatCaseReport,
  formatSummary,
  GOLDEN_CASES,
  loadCase,
  runBackend,
  runConformance,
} from "../../src/eval/conformance.ts";
import { main } from "../../src/cli/conform.ts";
import { serveCheckout } from "../_serve.ts";

/** The vendored golden cases (never ../shared: a fresh clone must run them). */
const VENDORED = new URL("../../testdata/conformance/", import.meta.url).pathname;
const CASES = [
  "A1_train_qneuron_head",
  "A2_train_adapter_layer_b2",
  "A3_train_adapter_head_defaults",
  "A4_train_qneuron_layer",
  "B1_infer_qneuron_head",
  "B2_infer_adapter_layer_tied",
  "B3_infer_adapter_head_chunked",
  "B4_infer_qneuron_layer_short_prompt",
  "C1_attn_single_chunk",
  "C2_attn_chunked_padded_b2",
];

function explain(c: CaseReport): string {
  return formatCaseReport(c, { verbose: true });
}

Deno.test("runConformance() with no folder finds the ten vendored cases and passes them all", async () => {
  assert.equal(DEFAULT_CONFORMANCE_DIR.pathname, VENDORED);
  assert.deepEqual([...GOLDEN_CASES], CASES);
  const lines: string[] = [];
  const report = await runConformance(undefined, { log: (l) => lines.push(l) });
  assert.equal(report.backend, "cpu");
  assert.ok(report.cases.length >= 10, `only ${report.cases.length} cases under ${report.dir}`);
  assert.deepEqual(report.cases.map((c) => c.name), CASES);
  assert.equal(lines.length, CASES.length);
  for (const c of report.cases) {
    assert.ok(c.ok, explain(c));
    // every expected tensor except the inputs was produced and compared
    const inputs = c.kind === "attention_only"
      ? ["q", "k", "v", "decisions", "attn_mask"]
      : c.kind === "train_forward"
      ? ["input_ids", "noise"]
      : ["input_ids"];
    assert.deepEqual([...c.notProduced].sort(), inputs.sort(), explain(c));
  }
  assert.equal(report.passed, 10);
  assert.equal(formatSummary(report), "conformance: 10 passed, 0 failed");
  assert.match(lines[0], /^PASS A1_train_qneuron_head {2}max_err \d\.\de-\d+ \(\w+\)$/);
});

Deno.test("the CPU backend reproduces the unobservable -1 rows and NaN cr values exactly", async () => {
  for (
    const name of [
      "B1_infer_qneuron_head",
      "B4_infer_qneuron_layer_short_prompt",
      "C2_attn_chunked_padded_b2",
    ]
  ) {
    const loaded = await loadCase(VENDORED + name);
    const out = await runBackend(cpuBackend, loaded);
    const names = loaded.kind === "inference"
      ? ["cache_len", "cache_retained_mask", "cr_model", "cr_cache", "cr_cache_per_layer"]
      : ["cache_len", "cache_retained_mask"];
    for (const n of names) {
      const tol = n.startsWith("cr_") ? { kind: "close" as const, atol: 0, rtol: 1e-6 } : EXACT;
      const c = compareTensor(n, out[n], loaded.expected.get(n)!, tol); // no skipping of -1
      assert.ok(c.ok, `${name}: ${n}: ${JSON.stringify(c)}`);
      assert.equal(c.skipped, 0);
    }
  }
});

/** Copies a vendored case into a fresh temp folder (writable). */
async function copyCase(name: string, into?: string): Promise<string> {
  const root = into ?? await Deno.makeTempDir({ prefix: "conform_test_" });
  const dir = `${root}/${name}`;
  await Deno.mkdir(dir, { recursive: true });
  for await (const e of Deno.readDir(VENDORED + name)) {
    await Deno.copyFile(`${VENDORED}${name}/${e.name}`, `${dir}/${e.name}`);
    await Deno.chmod(`${dir}/${e.name}`, 0o644);
  }
  return root;
}

/** Rewrites case.safetensors with `edit` applied to the decoded tensors. */
async function editTensors(
  dir: string,
  edit: (
    t: Record<
      string,
      { dtype: SafetensorsDtype; shape: number[]; data: Float32Array | Int32Array | Uint8Array }
    >,
  ) => void,
): Promise<void> {
  const path = `${dir}/case.safetensors`;
  const { tensors } = decodeSafetensors(await Deno.readFile(path), path);
  edit(tensors);
  await writeSafetensors(path, tensors);
}

Deno.test("a perturbed expected value fails its case, naming the tensor and the index", async () => {
  const root = await copyCase("B1_infer_qneuron_head");
  try {
    await copyCase("C1_attn_single_chunk", root);
    // logits[5, 7] off by 1e-3 (tolerance 1e-4 + 1e-4·|e|); one decision flipped in C1
    await editTensors(`${root}/B1_infer_qneuron_head`, (t) => {
      t.logits.data[5 * 256 + 7] += 1e-3;
    });
    await editTensors(`${root}/C1_attn_single_chunk`, (t) => {
      t.retained_mask.data[((39 * 1 + 0) * 2 + 1) * 40 + 3] ^= 1;
    });
    const report = await runConformance(root, { backend: cpuBackend });
    assert.equal(report.failed, 2);
    assert.equal(report.passed, 0);
    assert.equal(report.ok, false);
    const [b1, c1] = report.cases;
    assert.equal(b1.name, "B1_infer_qneuron_head");
    const bad = b1.comparisons.filter((c) => !c.ok);
    assert.deepEqual(bad.map((c) => c.name), ["logits"]);
    assert.equal(bad[0].mismatches, 1);
    assert.deepEqual(bad[0].firstFailure?.at, [5, 7]);
    assert.deepEqual(bad[0].maxAt, [5, 7]);
    assert.ok(Math.abs(bad[0].maxAbsErr - 1e-3) < 1e-6);
    assert.match(
      b1.failures[0],
      /^logits \[44, 256\].*FAIL: 1 of 11264 outside; first at \[5, 7\]/,
    );
    assert.match(formatCaseReport(b1), /^FAIL B1_infer_qneuron_head .*logits/);
    assert.deepEqual(c1.comparisons.filter((c) => !c.ok).map((c) => c.name), ["retained_mask"]);
    assert.deepEqual(c1.comparisons.find((c) => c.name === "retained_mask")?.firstFailure?.at, [
      39,
      0,
      1,
      3,
    ]);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a NaN where a number is expected (and vice versa) fails", () => {
  const e = { shape: [3], data: new Float32Array([1, NaN, 2]) };
  const ok = compareTensor("x", { shape: [3], data: new Float64Array([1, NaN, 2]) }, e, EXACT);
  assert.ok(ok.ok);
  const a1 = compareTensor("x", { shape: [3], data: new Float64Array([1, 0, 2]) }, e, {
    kind: "close",
    atol: 1,
    rtol: 1,
  });
  assert.equal(a1.ok, false);
  assert.deepEqual(a1.firstFailure?.at, [1]);
  const a2 = compareTensor("x", { shape: [3], data: new Float64Array([1, NaN, NaN]) }, e, {
    kind: "close",
    atol: 1,
    rtol: 1,
  });
  assert.equal(a2.mismatches, 1);
  assert.equal(a2.maxAbsErr, Infinity);
  const shape = compareTensor("x", { shape: [1, 3], data: new Float64Array(3) }, e, EXACT);
  assert.equal(shape.ok, false);
  assert.match(shape.error ?? "", /shape \[1, 3\].*\[3\]/);
});

Deno.test("tolerance keys with slashes and parenthesised lists are parsed", () => {
  const t = parseTolerances({
    "q / k / v": { atol: 1e-4, rtol: 2e-4 },
    "integers (input_ids, decisions, cache_len)": "exact",
    logits: { atol: 1e-3 },
  });
  assert.deepEqual(t.get("k"), { kind: "close", atol: 1e-4, rtol: 2e-4 });
  assert.deepEqual(t.get("cache_len"), EXACT);
  assert.deepEqual(t.get("logits"), { kind: "close", atol: 1e-3, rtol: 0 });
  assert.throws(() => parseTolerances({ x: 3 }), SyntaxError);
});

Deno.test("missing files and unknown kinds fail the case with a message naming the file", async () => {
  const root = await copyCase("A4_train_qneuron_layer");
  try {
    await copyCase("C1_attn_single_chunk", root);
    await copyCase("B4_infer_qneuron_layer_short_prompt", root);
    await Deno.remove(`${root}/A4_train_qneuron_layer/weights.safetensors`);
    const cj = `${root}/C1_attn_single_chunk/case.json`;
    const json = JSON.parse(await Deno.readTextFile(cj));
    await Deno.writeTextFile(cj, JSON.stringify({ ...json, kind: "attention_sideways" }));
    await Deno.remove(`${root}/B4_infer_qneuron_layer_short_prompt/case.safetensors`);
    await Deno.mkdir(`${root}/not_a_case/deeper`, { recursive: true }); // ignored: no case.json

    const report = await runConformance(root, { backend: cpuBackend });
    assert.deepEqual(report.cases.map((c) => [c.name, c.ok]), [
      ["A4_train_qneuron_layer", false],
      ["B4_infer_qneuron_layer_short_prompt", false],
      ["C1_attn_single_chunk", false],
    ]);
    const [a4, b4, c1] = report.cases;
    assert.match(a4.failures[0], /missing file .*A4_train_qneuron_layer\/weights\.safetensors/);
    assert.match(
      b4.failures[0],
      /missing file .*B4_infer_qneuron_layer_short_prompt\/case\.safetensors/,
    );
    assert.match(
      c1.failures[0],
      /C1_attn_single_chunk\/case\.json: unknown kind "attention_sideways"/,
    );
    assert.equal(c1.kind, "attention_sideways");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("a backend that throws or returns nothing fails the case instead of crashing", async () => {
  const root = await copyCase("C1_attn_single_chunk");
  try {
    const throwing = {
      ...cpuBackend,
      name: "broken",
      attentionOnly: () => Promise.reject(new Error("kernel exploded")),
    };
    let r = await runConformance(root, { backend: throwing });
    assert.match(r.cases[0].failures[0], /^backend broken failed: kernel exploded/);
    const empty = { ...cpuBackend, name: "empty", attentionOnly: () => Promise.resolve({}) };
    r = await runConformance(root, { backend: empty });
    assert.equal(r.cases[0].ok, false);
    assert.match(r.cases[0].failures[0], /produced none of the expected tensors/);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("findCases accepts a single case folder and --only filters by name", async () => {
  const one = await findCases(VENDORED + "C2_attn_chunked_padded_b2");
  assert.deepEqual(one.map((c) => c.name), ["C2_attn_chunked_padded_b2"]);
  const r = await runConformance(VENDORED, { backend: cpuBackend, only: ["C1_attn_single_chunk"] });
  assert.deepEqual(r.cases.map((c) => c.name), ["C1_attn_single_chunk"]);
  assert.ok(r.ok);
});

Deno.test("a folder without cases, or a missing one, is never a silent pass", async () => {
  const empty = await Deno.makeTempDir({ prefix: "conform_empty_" });
  try {
    const r = await runConformance(empty);
    assert.equal(r.cases.length, 0);
    assert.equal(r.ok, false);
    await assert.rejects(() => runConformance(`${empty}/nowhere`), /nowhere not found/);
  } finally {
    await Deno.remove(empty, { recursive: true });
  }
});

Deno.test("cases are read over HTTP(S) too (how a registry import reaches the vendored folder)", async () => {
  const root = VENDORED.replace(/\/$/, "");
  const requests: string[] = [];
  await using server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      requests.push(path);
      if (path.includes("..")) return new Response("bad path", { status: 400 });
      try {
        return new Response(await Deno.readFile(root + path));
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  const base = `http://127.0.0.1:${server.addr.port}/`;
  const names = (await findCases(new URL(base))).map((c) => c.name);
  assert.deepEqual(names, CASES);
  const r = await runConformance(base, {
    only: ["B4_infer_qneuron_layer_short_prompt", "C2_attn_chunked_padded_b2"],
  });
  assert.deepEqual(r.cases.map((c) => [c.name, c.ok]), [
    ["B4_infer_qneuron_layer_short_prompt", true],
    ["C2_attn_chunked_padded_b2", true],
  ]);
  assert.ok(requests.includes("/B4_infer_qneuron_layer_short_prompt/weights.safetensors"));
  // a missing remote file fails its case naming the URL
  const one = await findCases(`${base}C1_attn_single_chunk/`);
  assert.deepEqual(one.map((c) => c.name), ["C1_attn_single_chunk"]);
  const missing = await loadCase(`${base}nowhere`).then(() => "", (e) => String(e));
  assert.match(missing, /missing file http:\/\/127\.0\.0\.1:\d+\/nowhere\/case\.json/);
});

Deno.test("the conform CLI runs both vendored folders by default; exits 0 on success, 1 on failure, 2 on usage errors", async () => {
  const log = console.log, err = console.error;
  const out: string[] = [];
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => out.push(a.join(" "));
  const root = await copyCase("C1_attn_single_chunk");
  try {
    assert.equal(
      await main([VENDORED, "--only", "C1_attn_single_chunk,C2_attn_chunked_padded_b2"]),
      0,
    );
    const lines = out.splice(0);
    assert.equal(lines.length, 3);
    assert.match(lines[0], /^PASS C1_attn_single_chunk {2}max_err /);
    assert.match(lines[1], /^PASS C2_attn_chunked_padded_b2 {2}max_err /);
    assert.equal(lines[2], "conformance: 2 passed, 0 failed");
    await editTensors(`${root}/C1_attn_single_chunk`, (t) => {
      t.decode_out.data[0] += 1;
    });
    assert.equal(await main([root]), 1);
    assert.equal(out.at(-1), "conformance: 0 passed, 1 failed");
    assert.match(out.at(-2)!, /^FAIL C1_attn_single_chunk {2}max_err 1\.0e0 \(decode_out\)/);
    out.length = 0;
    // no folder: both vendored folders, 13 cases; D3 misses two per-tensor tolerances (the
    // reference's own float32 error, test/eval/train_conformance_test.ts), so the run exits 1
    assert.equal(await main(["--backend", "cpu"]), 1);
    assert.equal(out.length, 14);
    assert.equal(out.filter((l) => l.startsWith("PASS ")).length, 12);
    assert.match(out.at(-2)!, /^FAIL D3_grad_adapter_head_defaults_tied {2}/);
    assert.equal(out.at(-1), "conformance: 12 passed, 1 failed");
    out.length = 0;
    assert.equal(await main([VENDORED, root]), 2);
    assert.match(out.at(-1)!, /expected at most one folder, got 2/);
    assert.equal(await main([VENDORED, "--backend", "tpu"]), 2);
    assert.match(out.at(-1)!, /unknown backend "tpu"/);
    assert.equal(await main([VENDORED, "--backend", "toString"]), 2);
    assert.equal(await main([root + "/nowhere"]), 2);
  } finally {
    console.log = log;
    console.error = err;
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test({
  name:
    "the conform CLI with no folder and no --backend runs cpu then gpu and names every failing case per backend",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const log = console.log, err = console.error;
    const out: string[] = [];
    console.log = (...a: unknown[]) => out.push(a.join(" "));
    console.error = (...a: unknown[]) => out.push(a.join(" "));
    try {
      assert.equal(await main(["--only", "C1_attn_single_chunk"]), 0);
      assert.equal(out.length, 7);
      assert.deepEqual([out[0], out[3]], ["backend cpu", "backend gpu"]);
      assert.match(out[1], /^PASS C1_attn_single_chunk /);
      assert.match(out[4], /^PASS C1_attn_single_chunk /);
      assert.equal(out.at(-1), "conformance (cpu, gpu): 2 passed, 0 failed");
      out.length = 0;
      assert.equal(
        await main(["--only", "D1_grad_adapter_head,D3_grad_adapter_head_defaults_tied"]),
        1,
      );
      assert.equal(
        out.at(-1),
        "conformance (cpu, gpu): 2 passed, 2 failed; failing: cpu D3_grad_adapter_head_defaults_tied, " +
          "gpu D3_grad_adapter_head_defaults_tied",
      );
    } finally {
      console.log = log;
      console.error = err;
    }
  },
});

Deno.test("imported over HTTP (as from JSR), runConformance() fetches the vendored cases over HTTP", async () => {
  const server = serveCheckout(/^\/(mod\.ts|src\/|shaders\/|testdata\/)/);
  try {
    const line = await server.evalChild(`
      const { runConformance } = await import("${server.origin}/src/eval/conformance.ts");
      const r = await runConformance();
      console.log(JSON.stringify({ dir: r.dir, passed: r.passed, failed: r.failed }));`);
    assert.deepEqual(JSON.parse(line), {
      dir: `${server.origin}/testdata/conformance/`,
      passed: 10,
      failed: 0,
    });
    assert.ok(server.served.includes("/src/eval/conformance.ts"), "the module came over HTTP");
    assert.ok(
      server.served.includes(
        "/testdata/conformance/B2_infer_adapter_layer_tied/weights.safetensors",
      ),
    );
  } finally {
    await server.close();
  }
});
