import assert from "node:assert/strict";
import { isVisible, marksFromDecisions } from "../../src/dms/oracle.ts";
import {
  delayedEvictionCells,
  delayedEvictionSvg,
  DIAGRAM_STATES,
} from "../../src/plot/diagram.ts";

Deno.test("delayedEvictionCells: every cell agrees with the SPEC §5.1 oracle (all decision patterns of 7 tokens)", () => {
  for (const W of [0, 1, 2, 3]) {
    for (let bits = 0; bits < 1 << 7; bits++) {
      const d = Array.from({ length: 7 }, (_, t) => (bits >> t) & 1);
      const mark = marksFromDecisions(d);
      const cells = delayedEvictionCells({ decisions: d, window: W });
      assert.equal(cells.length, (7 * 8) / 2, "one cell per key i <= t");
      for (const c of cells) {
        // the query at t knows mark(i) = d(i + 1) only once step i + 1 has run
        const known = c.key + 1 <= c.query ? mark[c.key] : 0;
        const visible = isVisible(c.query, c.key, known, W);
        const want = !visible ? "evicted" : known ? "marked, in window" : "visible";
        assert.equal(c.state, want, `W ${W} d ${d} t ${c.query} i ${c.key}`);
      }
    }
  }
});

Deno.test("delayedEvictionCells: the default story — d[3] marks token 2, visible to t = 3..5, gone at 6", () => {
  const cells = delayedEvictionCells();
  const col = cells.filter((c) => c.key === 2).map((c) => [c.query, c.state, c.note]);
  assert.deepEqual(col, [
    [2, "visible", ""],
    [3, "marked, in window", "d[3]=1|marks 2"],
    [4, "marked, in window", ""],
    [5, "marked, in window", ""],
    [6, "evicted", "2|leaves"],
    [7, "evicted", ""],
  ]);
  assert.throws(() => delayedEvictionCells({ decisions: [0, 2] }), /decisions\[1\] must be 0 or 1/);
  assert.throws(() => delayedEvictionCells({ window: -1 }), /window must be an integer >= 0/);
  assert.throws(() => delayedEvictionCells({ decisions: [] }), /decisions is empty/);
});

Deno.test("delayedEvictionSvg: a rectangle per cell, the notes, the legend and the axis titles", async () => {
  const svg = await delayedEvictionSvg();
  assert.ok(svg.startsWith("<svg"));
  assert.equal((svg.match(/aria-roledescription="rect mark"/g) ?? []).length, 36);
  assert.equal((svg.match(/aria-roledescription="text mark"/g) ?? []).length, 2);
  for (
    const label of [
      ...DIAGRAM_STATES,
      "key position i",
      "decode step t \\(the query\\)",
      "Delayed eviction \\(window W = 3\\)",
    ]
  ) {
    assert.match(svg, new RegExp(`>${label}</text>`), label);
  }
  assert.match(svg, /<tspan[^>]*>d\[3\]=1<\/tspan>/);
});

Deno.test("docs/delayed_eviction.svg is what docs/delayed_eviction.ts writes today", async () => {
  const committed = await Deno.readTextFile(
    new URL("../../docs/delayed_eviction.svg", import.meta.url),
  );
  assert.equal(
    committed,
    await delayedEvictionSvg(),
    "rerun: deno run -A docs/delayed_eviction.ts",
  );
});
