/**
 * Where conformance cases come from: a folder on disk or over HTTP(S), laid
 * out as `testdata/conformance/README.md` describes (one subfolder per case
 * with `case.json`). The golden cases ship with the package in
 * `testdata/conformance/`; {@linkcode DEFAULT_CONFORMANCE_DIR} finds them
 * relative to this module, so they are on disk in a checkout and fetched over
 * HTTP(S) when the package is imported from a registry (as the shader loader
 * does, `src/gpu/shader.ts`).
 *
 * A location is a string: a local path, or an `http://` / `https://` URL.
 * A remote folder cannot be listed, so {@linkcode findCases} looks there for
 * the folder itself being a case, else for the {@linkcode GOLDEN_CASES} names.
 *
 * @example List the vendored cases
 * ```ts
 * import { DEFAULT_CONFORMANCE_DIR, findCases, folderLocation } from "./case_folder.ts";
 * const cases = await findCases(folderLocation(DEFAULT_CONFORMANCE_DIR));
 * console.log(cases.length); // 10
 * ```
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** The golden cases vendored in `testdata/conformance/` (resolved against this module). */
export const DEFAULT_CONFORMANCE_DIR: URL = new URL("../../testdata/conformance/", import.meta.url);

/**
 * The training golden cases (`train_step`) vendored in `testdata/conformance-train/`, a folder
 * of their own (README there) so that a runner that does not know the kind is not disturbed.
 */
export const DEFAULT_CONFORMANCE_TRAIN_DIR: URL = new URL(
  "../../testdata/conformance-train/",
  import.meta.url,
);

/** Every vendored golden folder: what `deno task conform` runs with no folder. */
export const DEFAULT_CONFORMANCE_DIRS: readonly URL[] = Object.freeze([
  DEFAULT_CONFORMANCE_DIR,
  DEFAULT_CONFORMANCE_TRAIN_DIR,
]);

/** The names of the vendored golden cases, in order (how a remote folder is searched). */
export const GOLDEN_CASES: readonly string[] = Object.freeze([
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
]);

/** The names of the vendored training golden cases (`testdata/conformance-train/`), in order. */
export const GOLDEN_TRAIN_CASES: readonly string[] = Object.freeze([
  "D1_grad_adapter_head",
  "D2_grad_qneuron_layer_b2",
  "D3_grad_adapter_head_defaults_tied",
]);

/** A problem with a case's files (missing, malformed): fails that case with this message. */
export class CaseError extends Error {}

/** A case found in a folder: its name (path relative to the folder) and its location. */
export interface FoundCase {
  /** Folder path relative to the conformance folder, `/`-separated. */
  readonly name: string;
  /** The case folder: local path or http(s) URL. */
  readonly dir: string;
}

/**
 * A location string for `dir`: a `file:` URL becomes its path, an `http(s):`
 * URL its href, a string stays as it is.
 *
 * @throws {TypeError} for other URL schemes
 */
export function folderLocation(dir: string | URL): string {
  if (typeof dir === "string") return dir;
  if (dir.protocol === "file:") return fileURLToPath(dir);
  if (dir.protocol === "http:" || dir.protocol === "https:") return dir.href;
  throw new TypeError(
    `conformance folder ${dir.href}: expected a file:, http: or https: URL (or a local folder path)`,
  );
}

/** True iff `loc` is an `http://` or `https://` URL. */
export function isRemote(loc: string): boolean {
  return /^https?:\/\//i.test(loc);
}

/** `dir/name`, for paths and URLs alike. */
export function join(dir: string, name: string): string {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/** The last part of a path or URL (trailing slashes ignored). */
export function basename(path: string): string {
  const p = path.replace(/\/+$/, "");
  return p.slice(p.lastIndexOf("/") + 1) || p;
}

/** The message of an error, or the value as a string. */
export function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * Reads a whole file from disk or over HTTP(S).
 *
 * @throws {CaseError} `missing file <loc>` when it does not exist (HTTP 404/410)
 */
export async function readBytes(loc: string): Promise<Uint8Array> {
  if (!isRemote(loc)) {
    try {
      return await Deno.readFile(loc);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new CaseError(`missing file ${loc}`);
      throw e;
    }
  }
  const res = await httpGet(loc);
  if (!res.ok) {
    await res.body?.cancel();
    if (res.status === 404 || res.status === 410) throw new CaseError(`missing file ${loc}`);
    throw new Error(`cannot fetch ${loc}: HTTP ${res.status}`);
  }
  return new Uint8Array(await res.arrayBuffer());
}

async function httpGet(loc: string): Promise<Response> {
  try {
    return await fetch(loc);
  } catch (e) {
    throw new Error(
      `cannot fetch ${loc}: ${message(e)} (remote conformance cases need network access ` +
        "(--allow-net); or pass a local folder, e.g. a checkout's testdata/conformance)",
      { cause: e },
    );
  }
}

/**
 * Reads and parses a JSON file.
 *
 * @throws {CaseError} naming the file when it is missing or not valid JSON
 */
export async function readJson(loc: string): Promise<unknown> {
  const text = new TextDecoder().decode(await readBytes(loc));
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CaseError(`${loc}: not valid JSON (${message(e)})`);
  }
}

/** True iff the file exists (a local stat, or an HTTP GET that is not 404/410). */
export async function exists(loc: string): Promise<boolean> {
  if (isRemote(loc)) {
    const res = await httpGet(loc); // GET, not HEAD: static file hosts do not all answer HEAD
    await res.body?.cancel();
    if (res.ok) return true;
    if (res.status === 404 || res.status === 410) return false;
    throw new Error(`cannot fetch ${loc}: HTTP ${res.status}`);
  }
  try {
    await Deno.stat(loc);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/**
 * Case folders under `dir`: `dir` itself if it has `case.json`, else every
 * subfolder (recursively, hidden folders skipped) that has one, sorted by
 * name. A remote folder cannot be listed: there the {@linkcode GOLDEN_CASES}
 * and {@linkcode GOLDEN_TRAIN_CASES} names that exist are returned.
 *
 * @throws {Error} if a local `dir` is missing or not a folder
 */
export async function findCases(dir: string | URL): Promise<FoundCase[]> {
  const loc = folderLocation(dir);
  if (isRemote(loc)) {
    if (await exists(join(loc, "case.json"))) return [{ name: basename(loc), dir: loc }];
    const out: FoundCase[] = [];
    for (const name of [...GOLDEN_CASES, ...GOLDEN_TRAIN_CASES]) {
      const sub = join(loc, name);
      if (await exists(join(sub, "case.json"))) out.push({ name, dir: sub });
    }
    return out;
  }
  let stat: Deno.FileInfo;
  try {
    stat = await Deno.stat(loc);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new Error(`conformance folder ${loc} not found`);
    throw e;
  }
  if (!stat.isDirectory) throw new Error(`${loc} is not a folder`);
  if (await exists(join(loc, "case.json"))) return [{ name: basename(loc), dir: loc }];
  const out: FoundCase[] = [];
  const walk = async (d: string, rel: string, depth: number): Promise<void> => {
    const entries: string[] = [];
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory && !e.name.startsWith(".")) entries.push(e.name);
    }
    entries.sort();
    for (const name of entries) {
      const sub = join(d, name), subRel = rel ? `${rel}/${name}` : name;
      if (await exists(join(sub, "case.json"))) out.push({ name: subRel, dir: sub });
      else if (depth < 4) await walk(sub, subRel, depth + 1);
    }
  };
  await walk(loc, "", 1);
  return out;
}
