/**
 * The browser page (examples/browser/) in headless Chromium with WebGPU on SwiftShader, its CPU
 * driver: the bundle of the same mod.ts loads, fetches its kernels, runs the DMS quickstart,
 * and prints numbers equal to the same quickstart run here in Deno; DMS keeps and reads fewer
 * KV entries than dense. Skipped, saying why, when no Chromium is installed
 * (`apt-get install -y chromium`).
 */
import assert from "node:assert/strict";
import { findChromium, runPage } from "../examples/browser/headless.ts";
import { type QuickstartResult, runQuickstart } from "../examples/browser/quickstart.ts";
import { bundle, serveRepo } from "../examples/browser/serve.ts";

const chromium = findChromium();
if (!chromium) {
  console.log(
    "test/browser_test.ts: skipped, no chromium on PATH (apt-get install -y chromium to run it)",
  );
}

Deno.test({
  name: "the browser page runs the DMS quickstart in headless Chromium and matches Deno",
  ignore: !chromium,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await bundle();
    const { url, server } = serveRepo(0);
    let page;
    try {
      page = await runPage(url, { chromium, timeoutMs: 180_000 });
    } finally {
      await server.shutdown();
    }
    const log = `${page.text}\n${page.console.join("\n")}`;
    assert.equal(page.status, "done", log);
    const web = page.result as QuickstartResult;
    assert.ok(web, log);
    // DMS evicted: fewer live entries in every head, fewer reads, a smaller peak
    const [dense, dms] = [web.dense.stats, web.dms.stats];
    dense.lengths.forEach((row, l) =>
      row.forEach((n, h) => {
        assert.equal(n, dense.tokensSeen, `dense layer ${l} head ${h}`);
        assert.ok(dms.lengths[l][h] < n, `DMS layer ${l} head ${h}: ${dms.lengths[l][h]}`);
      })
    );
    assert.ok(dms.readTokens < dense.readTokens, log);
    assert.ok(dms.peakBytes < dense.peakBytes, log);
    assert.match(page.text, /live KV entries per \(layer, KV head\)/);
    // the same computation in Deno (lavapipe or llvmpipe here, SwiftShader there)
    const local = await runQuickstart();
    for (const p of ["dense", "dms"] as const) {
      assert.deepEqual(web[p].tokens, local[p].tokens, `${p} tokens`);
      const { compressionRatio: a, ...restWeb } = web[p].stats;
      const { compressionRatio: b, ...restLocal } = local[p].stats;
      assert.deepEqual(restWeb, restLocal, `${p} stats`);
      assert.ok(Math.abs(a - b) < 1e-9, `${p} compression ${a} vs ${b}`);
    }
  },
});
