import assert from "node:assert/strict";
import {
  type CompressionPoint,
  compressionSpec,
  compressionSvg,
} from "../../src/plot/compression.ts";

/** Points of a dense cache (4 entries per position) and a DMS cache keeping every other one. */
function points(steps: number): CompressionPoint[] {
  const out: CompressionPoint[] = [];
  for (let s = 1; s <= steps; s++) {
    const t = 8 * s;
    out.push({ policy: "dense", tokensSeen: t, liveTokens: 4 * t, compressionRatio: 1 });
    out.push({
      policy: "dms",
      tokensSeen: t,
      liveTokens: 2 * t + 4,
      compressionRatio: t / (t / 2 + 1),
    });
  }
  return out;
}

Deno.test("compressionSvg: two panels, one line per policy in each, a point per step, the titles", async () => {
  const pts = points(5);
  const svg = await compressionSvg(pts, "Student: dense vs DMS");
  assert.ok(svg.startsWith("<svg"));
  // 2 panels × 2 policies lines; a point mark per datum in each panel
  assert.equal((svg.match(/aria-roledescription="line mark"/g) ?? []).length, 4);
  assert.equal((svg.match(/aria-roledescription="point"/g) ?? []).length, 2 * pts.length);
  for (
    const label of [
      "Student: dense vs DMS",
      "positions processed",
      "live KV entries \\(all layers and heads\\)",
      "compression ratio \\(get_cr\\)",
      "dense",
      "dms",
      "cache",
    ]
  ) assert.match(svg, new RegExp(`>${label}</text>`), label);
});

Deno.test("compressionSpec: the data is sorted by policy then position, whatever the input order", () => {
  const pts = points(3).reverse();
  const values = (compressionSpec(pts).data as { values: CompressionPoint[] }).values;
  assert.deepEqual(values.map((p) => `${p.policy}@${p.tokensSeen}`), [
    "dense@8",
    "dense@16",
    "dense@24",
    "dms@8",
    "dms@16",
    "dms@24",
  ]);
});

Deno.test("compressionSpec: bad points are errors naming the point and the field", () => {
  assert.throws(() => compressionSpec([]), /no points/);
  assert.throws(
    () => compressionSpec([{ policy: "dms", tokensSeen: 3, liveTokens: NaN, compressionRatio: 1 }]),
    /point 0 \(dms\): liveTokens must be a finite number >= 0, got NaN/,
  );
  assert.throws(
    () => compressionSpec([{ policy: "", tokensSeen: 3, liveTokens: 1, compressionRatio: 1 }]),
    /point 0: policy must be a non-empty string/,
  );
});
