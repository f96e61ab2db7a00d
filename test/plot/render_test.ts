import assert from "node:assert/strict";
import { renderSvg } from "../../src/plot/render.ts";
import { writeTextFileAtomic } from "../../src/io/atomic.ts";

Deno.test("renderSvg: a line chart has one path per series and the axis titles", async () => {
  const values = [
    { x: 1, y: 0.5, s: "dense" },
    { x: 2, y: 0.7, s: "dense" },
    { x: 1, y: 0.6, s: "dms" },
    { x: 3, y: 0.9, s: "dms" },
  ];
  const svg = await renderSvg({
    data: { values },
    mark: "line",
    encoding: {
      x: { field: "x", type: "quantitative", title: "KV reads" },
      y: { field: "y", type: "quantitative", title: "accuracy" },
      color: { field: "s", type: "nominal" },
    },
  });
  assert.ok(svg.startsWith("<svg"));
  assert.match(svg, />KV reads</);
  assert.match(svg, />accuracy</);
  assert.equal((svg.match(/<path [^>]*aria-roledescription="line mark"/g) ?? []).length, 2);
});

Deno.test("renderSvg: a bad specification is an error naming the spec, not a crash", async () => {
  await assert.rejects(
    () => renderSvg({ data: { values: [] }, mark: "no-such-mark" }),
    /renderSvg: invalid chart specification/,
  );
});

Deno.test("writeTextFileAtomic: writes, replaces, leaves no temporary file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeTextFileAtomic(`${dir}/sub/a.txt`, "one");
    await writeTextFileAtomic(`${dir}/sub/a.txt`, "two");
    assert.equal(await Deno.readTextFile(`${dir}/sub/a.txt`), "two");
    const names = [...Deno.readDirSync(`${dir}/sub`)].map((e) => e.name);
    assert.deepEqual(names, ["a.txt"]);
    await assert.rejects(() => writeTextFileAtomic(`${dir}/sub/a.txt/x`, "z"), /a\.txt\/x/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
