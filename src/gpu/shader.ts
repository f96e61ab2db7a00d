/**
 * WGSL source loading and preprocessing.
 *
 * Kernels live as `.wgsl` files in the top-level `shaders/` folder. They are
 * located relative to this module's URL, so the same code loads them from a
 * local checkout (`file:`) and from a remote package (`https:`, e.g. JSR).
 *
 * Preprocessing is deliberately tiny: a kernel may use type aliases that the
 * launcher chooses (`T` for the storage element type, usually `f32` or
 * `f16`). The loader prepends `enable f16;` when any alias is `f16` and
 * `alias NAME = TYPE;` lines for each define. Everything else is plain WGSL
 * with `override` constants for workgroup sizes.
 *
 * @module
 */

/** One storage or uniform binding declared in `@group(0)` of a shader. */
export interface BindingDecl {
  /** `@binding(n)` index. */
  binding: number;
  /** `uniform`, `read` (read-only storage) or `read_write` storage. */
  kind: "uniform" | "read" | "read_write";
}

const SHADER_ROOT = new URL("../../shaders/", import.meta.url);
const sources = new Map<string, Promise<string>>();

/**
 * Loads `shaders/<name>.wgsl`, from disk or over HTTP(S), once per name.
 *
 * @param name Shader file name without extension, e.g. `"elementwise"`.
 * @returns The WGSL source text.
 */
export function loadShaderSource(name: string): Promise<string> {
  if (!/^[a-z0-9_]+$/.test(name)) {
    throw new TypeError(`Invalid shader name "${name}": use lower-case letters, digits and _`);
  }
  let src = sources.get(name);
  if (!src) {
    const url = new URL(`${name}.wgsl`, SHADER_ROOT);
    src = readUrl(url);
    sources.set(name, src);
    src.catch(() => sources.delete(name));
  }
  return src;
}

async function readUrl(url: URL): Promise<string> {
  if (url.protocol === "file:") {
    try {
      return await Deno.readTextFile(url);
    } catch (e) {
      throw new Error(`Cannot read shader ${url.href}: ${(e as Error).message}`, { cause: e });
    }
  }
  const res = await fetch(url);
  if (!res.ok) {
    await res.body?.cancel();
    throw new Error(`Cannot fetch shader ${url.href}: HTTP ${res.status}`);
  }
  return await res.text();
}

/**
 * Replaces each line `// #include "name"` of a shader with the source of `shaders/<name>.wgsl`,
 * itself expanded, so that a file of entry points can share the declarations and helpers of
 * another (`heads_rope_append.wgsl` takes `heads_rope.wgsl`'s; `gemv_rn.wgsl` takes `gemv.wgsl`,
 * which takes `gemv_acc.wgsl` and `gemv_norm.wgsl`). Each file goes in once: a later include of
 * a name already expanded becomes an empty line. The including file's bindings must not collide
 * with the included files'.
 *
 * @param source WGSL source.
 * @param lookup The source of a shader by name (loaded with the manifest), or undefined.
 * @returns The source with its includes expanded.
 * @throws {Error} For an unknown name, or a file that includes itself through others (naming the
 * chain).
 */
export function resolveIncludes(
  source: string,
  lookup: (name: string) => string | undefined,
): string {
  const done = new Set<string>();
  const expand = (text: string, chain: readonly string[]): string =>
    text.replace(/^\/\/ #include "([a-z0-9_]+)"$/gm, (_, name: string) => {
      if (chain.includes(name)) {
        throw new Error(`#include "${name}": a cycle (${[...chain, name].join(" -> ")})`);
      }
      if (done.has(name)) return "";
      const inner = lookup(name);
      if (inner === undefined) {
        throw new Error(`#include "${name}": no such shader in the manifest`);
      }
      done.add(name);
      return expand(inner, [...chain, name]);
    });
  return expand(source, []);
}

/**
 * Prepends `enable f16;` (when needed) and one `alias` per define.
 *
 * @param source WGSL source.
 * @param defines Type aliases, e.g. `{ T: "f16" }`.
 */
export function preprocess(source: string, defines: Record<string, string> = {}): string {
  const lines: string[] = [];
  const values = Object.values(defines);
  if (values.some((v) => /\bf16\b/.test(v))) lines.push("enable f16;");
  for (const [k, v] of Object.entries(defines)) lines.push(`alias ${k} = ${v};`);
  return lines.length ? `${lines.join("\n")}\n${source}` : source;
}

/**
 * Parses the `@group(0) @binding(n) var<...> name` declarations of a shader,
 * so that launchers can build explicit bind group layouts. With `entry`, only
 * the bindings that entry point uses (directly or through the functions it
 * calls) are returned, in `@binding` order: a multi-entry shader can give each
 * entry point its own buffers.
 */
export function parseBindings(source: string, entry?: string): BindingDecl[] {
  const re =
    /@group\(0\)\s*@binding\((\d+)\)\s*var<\s*(uniform|storage)\s*(?:,\s*(read|read_write)\s*)?>\s*(\w+)/g;
  const all: (BindingDecl & { name: string })[] = [];
  for (const m of source.matchAll(re)) {
    const kind = m[2] === "uniform" ? "uniform" : (m[3] === "read_write" ? "read_write" : "read");
    all.push({ binding: Number(m[1]), kind, name: m[4] });
  }
  all.sort((a, b) => a.binding - b.binding);
  all.forEach((d, i) => {
    if (d.binding !== i) {
      throw new SyntaxError(
        `Shader bindings must be numbered 0..n-1 without gaps (found @binding(${d.binding}))`,
      );
    }
  });
  let used = all;
  if (entry !== undefined) {
    const words = wordsReachableFrom(source, entry);
    used = all.filter((d) => words.has(d.name));
  }
  return used.map(({ binding, kind }) => ({ binding, kind }));
}

/** Identifiers used by function `entry` and every function it calls, transitively. */
function wordsReachableFrom(source: string, entry: string): Set<string> {
  const code = source.replace(/\/\/[^\n]*/g, "");
  const bodies = new Map<string, string>();
  const fnRe = /\bfn\s+(\w+)\s*\(/g;
  for (const m of code.matchAll(fnRe)) {
    const open = code.indexOf("{", m.index! + m[0].length);
    if (open < 0) continue;
    let depth = 0, i = open;
    for (; i < code.length; i++) {
      if (code[i] === "{") depth++;
      else if (code[i] === "}" && --depth === 0) break;
    }
    bodies.set(m[1], code.slice(m.index!, i + 1));
  }
  if (!bodies.has(entry)) throw new SyntaxError(`Shader has no function "${entry}"`);
  const words = new Set<string>();
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length) {
    const f = todo.pop()!;
    if (seen.has(f)) continue;
    seen.add(f);
    // identifiers, not member accesses: `wid.x` does not use a variable named `x`
    for (const w of bodies.get(f)!.match(/(?<![.\w])[A-Za-z_]\w*\b/g) ?? []) {
      words.add(w);
      if (bodies.has(w) && !seen.has(w)) todo.push(w);
    }
  }
  return words;
}

/** Scalar types a uniform `Params` field may have. */
export type ParamType = "u32" | "i32" | "f32";

/** One field of a shader's uniform struct. */
export interface ParamField {
  /** Field name as declared in WGSL. */
  name: string;
  /** Scalar type. */
  type: ParamType;
  /** Byte offset in the uniform block (WGSL layout: 4 bytes per scalar, in declaration order). */
  offset: number;
}

/** The layout of the uniform struct bound at `@group(0)`, parsed from WGSL. */
export interface ParamLayout {
  /** Struct name (e.g. `Params`). */
  struct: string;
  /** Fields in declaration order. */
  fields: readonly ParamField[];
  /** Struct size in bytes (rounded up to 16, as WGSL sizes uniform structs). */
  size: number;
}

const PARAM_TYPES = new Set<string>(["u32", "i32", "f32"]);

/**
 * Parses the struct of the `var<uniform>` binding of a shader, e.g.
 * `struct Params { rows: u32, d: u32, eps: f32 }` → fields `rows@0, d@4, eps@8`.
 * Only scalar `u32`/`i32`/`f32` fields are supported (each 4 bytes, 4-aligned,
 * so offsets are 4 × position).
 *
 * @param source WGSL source (after {@linkcode preprocess}).
 * @param maxBytes Largest struct size accepted (the uniform block size).
 * @returns The layout, or `undefined` when the shader declares no uniform.
 * @throws {SyntaxError} When the struct is missing, has a vector/array/other
 *   non-scalar field or a layout attribute (naming the field), or exceeds `maxBytes`.
 */
export function parseParamLayout(source: string, maxBytes = 256): ParamLayout | undefined {
  const code = source.replace(/\/\/[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "");
  const decl = /@group\(0\)\s*@binding\(\d+\)\s*var<\s*uniform\s*>\s*\w+\s*:\s*(\w+)/.exec(code);
  if (!decl) return undefined;
  const struct = decl[1];
  const body = new RegExp(`\\bstruct\\s+${struct}\\s*\\{([^}]*)\\}`).exec(code);
  if (!body) throw new SyntaxError(`Uniform struct ${struct} is not declared in the shader`);
  const fields: ParamField[] = [];
  for (const raw of splitTopLevel(body[1])) {
    const text = raw.trim();
    if (!text) continue;
    const m = /^((?:@\w+\([^)]*\)\s*)*)(\w+)\s*:\s*(.+)$/s.exec(text);
    if (!m) throw new SyntaxError(`struct ${struct}: cannot parse field "${text}"`);
    const [, attrs, name, type] = m;
    if (attrs.trim()) {
      throw new SyntaxError(
        `struct ${struct} field "${name}": layout attributes (${attrs.trim()}) are not supported`,
      );
    }
    const t = type.replace(/\s+/g, "");
    if (!PARAM_TYPES.has(t)) {
      throw new SyntaxError(
        `struct ${struct} field "${name}": type ${t} is not supported (uniform params are ` +
          `scalars: u32, i32 or f32)`,
      );
    }
    fields.push({ name, type: t as ParamType, offset: fields.length * 4 });
  }
  const size = Math.max(16, Math.ceil((fields.length * 4) / 16) * 16);
  if (size > maxBytes) {
    throw new SyntaxError(
      `struct ${struct}: ${size} bytes exceed the ${maxBytes}-byte uniform block`,
    );
  }
  return { struct, fields, size };
}

/** Splits struct members on the commas outside `<...>` (so `array<f32, 4>` stays whole). */
function splitTopLevel(body: string): string[] {
  const parts: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < body.length; i++) {
    const c = body[i];
    if (c === "<") depth++;
    else if (c === ">") depth--;
    else if (c === "," && depth === 0) {
      parts.push(body.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(body.slice(start));
  return parts;
}
