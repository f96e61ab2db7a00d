/**
 * `deno task demo` (examples/demo.ts) runs the committed DMS student through the dense and the
 * DMS cache, prints what it promises, and writes the two SVGs it names; on a healthy run it
 * prints no `error:` (even without XDG_RUNTIME_DIR), and the hint to install Mesa's Vulkan CPU
 * driver exactly when the adapter is a CPU driver through OpenGL.
 */
import assert from "node:assert/strict";
import { probeAdapter, slowAdapterHint } from "../src/gpu/adapter.ts";

/** This process's environment without XDG_RUNTIME_DIR (as on a machine without a desktop). */
function envWithoutXdg(): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.XDG_RUNTIME_DIR;
  return { ...env, NO_COLOR: "1" };
}

Deno.test({
  name: "examples/demo.ts: dense vs DMS on the committed student, accounting printed, SVGs written",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const out = await Deno.makeTempDir({ prefix: "dms_demo_test_" });
    try {
      const r = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--allow-read",
          "--allow-write",
          "--allow-env",
          "--allow-net",
          "examples/demo.ts",
          "--samples",
          "2",
          "--out",
          out,
        ],
        cwd: new URL("../", import.meta.url),
        env: envWithoutXdg(),
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(r.stdout) + new TextDecoder().decode(r.stderr);
      assert.equal(r.code, 0, text);
      assert.doesNotMatch(text, /^error:/m);
      const adapter = await probeAdapter();
      assert.ok(adapter);
      const hint = slowAdapterHint(adapter);
      const printed = text.split("\n").filter((l) => l.includes("mesa-vulkan-drivers"));
      assert.deepEqual(printed, hint ? [hint] : [], text);
      for (const l of [0, 1]) {
        for (const h of [0, 1]) assert.match(text, new RegExp(`layer ${l} head ${h}:  dense  241`));
      }
      const cr = text.match(/compression ratio \(get_cr\)\s+([\d.]+)\s+([\d.]+)/);
      assert.ok(cr, text);
      assert.equal(Number(cr[1]), 1);
      assert.ok(Number(cr[2]) > 3, `DMS compression ${cr[2]}`);
      assert.match(text, /answers correct \(of 2\)\s+\d\s+\d/);
      assert.match(text, /token 1\s+dense: \S+\s+\S+\s+\|\s+dms:/);
      const map = await Deno.readTextFile(`${out}/eviction_map.svg`);
      assert.match(map, />DMS eviction map, prompt 0 \(241 positions, W = 8\)</);
      assert.ok((map.match(/aria-roledescription="rect mark"/g) ?? []).length > 4);
      const cmp = await Deno.readTextFile(`${out}/compression.svg`);
      assert.equal((cmp.match(/aria-roledescription="line mark"/g) ?? []).length, 4);
      assert.match(text, new RegExp(`eviction map: ${out}/eviction_map.svg`));

      const missing = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-read", "--allow-env", "examples/demo.ts", "--student", `${out}/x`],
        cwd: new URL("../", import.meta.url),
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(missing.code, 1);
      assert.match(
        new TextDecoder().decode(missing.stderr),
        /no DMS student at .*config\.json missing/,
      );
    } finally {
      await Deno.remove(out, { recursive: true });
    }
  },
});
