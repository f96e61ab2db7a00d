/**
 * ARCHITECTURE.md's floors hold in the code: every import in `src/` goes to the same folder or a
 * lower floor, no file imports a `_`-private file of another folder, and there is no import cycle.
 * (A brute-force walk over the import graph, read from the source text.)
 */

import assert from "node:assert/strict";

const SRC = new URL("../src/", import.meta.url);

/** Floor of each top-level entry of src/ (ARCHITECTURE.md, lowest first). */
const FLOOR: Record<string, number> = {
  gpu: 0,
  tensor: 1,
  ops: 2,
  io: 3,
  plot: 3.5,
  cache: 4,
  dms: 5,
  policies: 5,
  model: 6,
  "generate.ts": 7,
  "text.ts": 7.5,
  train: 8,
  eval: 9,
  cli: 10,
};

function sources(dir: URL, prefix = ""): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(dir)) {
    if (e.isDirectory) out.push(...sources(new URL(`${e.name}/`, dir), `${prefix}${e.name}/`));
    else if (e.name.endsWith(".ts")) out.push(`${prefix}${e.name}`);
  }
  return out;
}

/** Relative imports (static `from "..."` and `import("...")`) of a file, as src/-relative paths. */
function imports(file: string): string[] {
  const text = Deno.readTextFileSync(new URL(file, SRC));
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const specs = [...code.matchAll(/(?:from|import)\s*\(?\s*"(\.[^"]+)"/g)].map((m) => m[1]);
  return specs.map((s) => new URL(s, new URL(file, SRC)).href.slice(SRC.href.length));
}

const top = (path: string) => path.split("/")[0];
const FILES = sources(SRC);
const GRAPH = new Map(FILES.map((f) => [f, imports(f)]));

Deno.test("every src/ folder has a floor in ARCHITECTURE.md", () => {
  const doc = Deno.readTextFileSync(new URL("../ARCHITECTURE.md", import.meta.url));
  for (const f of FILES) {
    const t = top(f);
    assert.ok(t in FLOOR, `src/${t} has no floor in this test's list`);
    assert.ok(doc.includes(t.endsWith(".ts") ? t : `${t}/`), `ARCHITECTURE.md never names ${t}`);
  }
});

Deno.test("imports in src/ only go down the floors, never to another folder's _-private file", () => {
  const bad: string[] = [];
  for (const [file, deps] of GRAPH) {
    for (const dep of deps) {
      if (dep.startsWith("..")) bad.push(`${file} imports ${dep}, outside src/`);
      const a = top(file), b = top(dep);
      if (a === b) continue;
      if (FLOOR[b] > FLOOR[a] || (FLOOR[b] === FLOOR[a])) {
        bad.push(`src/${file} (floor ${FLOOR[a]}) imports src/${dep} (floor ${FLOOR[b]})`);
      }
      if (dep.split("/").at(-1)!.startsWith("_")) bad.push(`src/${file} imports private ${dep}`);
    }
  }
  assert.deepEqual(bad, []);
});

Deno.test("there is no import cycle in src/", () => {
  const state = new Map<string, 1 | 2>(); // 1 = on the stack, 2 = done
  const cycles: string[] = [];
  const visit = (f: string, stack: string[]) => {
    state.set(f, 1);
    for (const d of GRAPH.get(f) ?? []) {
      if (!GRAPH.has(d)) continue;
      if (state.get(d) === 1) cycles.push([...stack.slice(stack.indexOf(d)), d].join(" -> "));
      else if (!state.has(d)) visit(d, [...stack, d]);
    }
    state.set(f, 2);
  };
  for (const f of FILES) if (!state.has(f)) visit(f, [f]);
  assert.deepEqual(cycles, []);
});
