import assert from "node:assert/strict";
import { type ParetoPoint, paretoSpec, paretoSvg } from "../../src/plot/pareto.ts";

/** Three policies, 4 configurations each, the first, second and last on the frontier. */
function points(): ParetoPoint[] {
  const out: ParetoPoint[] = [];
  ["dense", "dms", "tova"].forEach((policy, k) => {
    [1000, 2000, 4000, 8000].forEach((cost, i) => {
      out.push({
        policy,
        cost: cost / (k + 1),
        accuracy: [0.2, 0.5, 0.4, 0.9][i] - 0.05 * k,
        frontier: i !== 2,
      });
    });
  });
  return out;
}

Deno.test("paretoSvg: one frontier line per policy, a point per configuration, the axis titles", async () => {
  const pts = points();
  const svg = await paretoSvg(pts, { xTitle: "KV-cache token reads per problem" });
  assert.ok(svg.startsWith("<svg"));
  assert.equal((svg.match(/aria-roledescription="line mark"/g) ?? []).length, 3);
  assert.equal((svg.match(/aria-roledescription="point"/g) ?? []).length, pts.length);
  // each line passes through its policy's 3 frontier points: "M" + 2 "L" segments
  const lines = [...svg.matchAll(/aria-roledescription="line mark"[^>]*d="([^"]+)"/g)];
  assert.equal(lines.length, 3);
  for (const [, d] of lines) assert.equal((d.match(/[ML]/g) ?? []).length, 3, d);
  for (
    const label of [
      "Accuracy vs KV-cache token reads per problem",
      "KV-cache token reads per problem",
      "accuracy",
      "policy",
      "dense",
      "dms",
      "tova",
    ]
  ) assert.match(svg, new RegExp(`>${label}</text>`), label);
});

Deno.test("paretoSpec: log x by default, linear on request; data sorted by policy then cost", () => {
  const spec = paretoSpec(points().reverse(), { xTitle: "peak KV tokens", title: "T" });
  const layers = spec.layer as { encoding: { x: { scale: { type?: string } } } }[];
  assert.equal(layers[0].encoding.x.scale.type, "log");
  const values = (spec.data as { values: ParetoPoint[] }).values;
  assert.deepEqual(values.slice(0, 4).map((p) => `${p.policy}@${p.cost}`), [
    "dense@1000",
    "dense@2000",
    "dense@4000",
    "dense@8000",
  ]);
  const lin = paretoSpec([{ policy: "a", cost: 0, accuracy: 0, frontier: true }], {
    xTitle: "x",
    logX: false,
  });
  const linLayers = lin.layer as { encoding: { x: { scale: { type?: string } } } }[];
  assert.equal(linLayers[0].encoding.x.scale.type, undefined);
});

Deno.test("paretoSpec: bad points are errors naming the point and the field", () => {
  assert.throws(() => paretoSpec([], { xTitle: "x" }), /no points/);
  assert.throws(
    () => paretoSpec([{ policy: "dms", cost: 0, accuracy: 0.5, frontier: true }], { xTitle: "x" }),
    /point 0 \(dms\): cost must be a finite number > 0 \(log axis\), got 0/,
  );
  assert.throws(
    () => paretoSpec([{ policy: "dms", cost: 3, accuracy: 1.5, frontier: true }], { xTitle: "x" }),
    /point 0 \(dms\): accuracy must be in \[0, 1\], got 1.5/,
  );
  assert.throws(
    () => paretoSpec([{ policy: "", cost: 3, accuracy: 1, frontier: true }], { xTitle: "x" }),
    /point 0: policy must be a non-empty string/,
  );
});
