/**
 * Hugging Face Hub models in the standard hub cache, the one Python's `huggingface_hub` fills:
 * a model a user already fetched with Python (16 GB for Qwen3-8B-DMS-8x) is found there without
 * a second download, and what this module downloads lands in the same layout.
 *
 * Cache root: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. One repo:
 *
 * ```text
 * models--{owner}--{name}/
 *   refs/{revision}                 the commit a branch or tag pointed to ("main" → "a1b2…")
 *   blobs/{etag}                    file contents, named by the server's ETag (sha256 for LFS)
 *   snapshots/{commit}/{file}       symlinks to ../../blobs/{etag} (copies where links fail)
 * ```
 *
 * {@linkcode findCachedModel} resolves `refs/{revision}` (or a commit hash given as the revision)
 * to the snapshot folder and checks that it holds a complete model: `config.json` and
 * `model.safetensors`, or `model.safetensors.index.json` and every shard it names.
 * {@linkcode downloadModel} asks the server (HEAD `{endpoint}/{repo}/resolve/{revision}/{file}`,
 * redirects not followed: the first answer carries `X-Repo-Commit`, `X-Linked-Etag`,
 * `X-Linked-Size`) for each file's commit, blob id and size, skips blobs already complete,
 * streams the others to `blobs/{etag}.incomplete` (never held whole in memory), checks the
 * length, renames, links the snapshot entry, and writes `refs/{revision}` last. With
 * `HF_HUB_OFFLINE=1` (or `offline: true`) it never touches the network: a cached snapshot or a
 * clear error. When the server cannot be reached, a complete cached snapshot of the revision is
 * used, as Python does.
 *
 * Default file set: `config.json`, `tokenizer.json` (required); `tokenizer_config.json`,
 * `generation_config.json` (optional); then `model.safetensors`, or, when the repo has
 * `model.safetensors.index.json`, the index and every shard it names.
 *
 * Why not `@huggingface/hub` (npm, 2.17.5, evaluated in Deno 2.9.6): it imports and its
 * `downloadFileToCacheDir` writes this layout, but it asks the JSON API (`paths-info`) before
 * every file even when the file is cached, files each snapshot under the commit that last
 * touched the file rather than the revision's commit, never writes `refs/main` (so Python's
 * offline lookup misses it), ignores `HF_HUB_OFFLINE`, and reports no progress.
 *
 * @example
 * ```ts ignore
 * import { downloadModel } from "./hub.ts";
 * const dir = await downloadModel("nvidia/Qwen3-8B-DMS-8x");
 * // dir = "~/.cache/huggingface/hub/models--nvidia--Qwen3-8B-DMS-8x/snapshots/<commit>"
 * ```
 *
 * @module
 */

import { writeTextFileAtomic } from "./atomic.ts";
import { INDEX_FILE, isSafeRelativePath, SINGLE_FILE } from "./safetensors.ts";

/** Options of {@link downloadModel}. */
export interface DownloadOptions {
  /** Branch, tag or commit (default "main"). */
  revision?: string;
  /** Root of the hub cache (default {@linkcode hubCacheDir}). */
  cacheDir?: string;
  /** Hub base URL (default "https://huggingface.co"; `$HF_ENDPOINT` when set). */
  endpoint?: string;
  /** Access token for gated or private repos (default `$HF_TOKEN` when set). */
  token?: string;
  /** Download exactly these files (all required) instead of the default set. */
  files?: string[];
  /** Never use the network (default: true when `$HF_HUB_OFFLINE` is 1/true/yes/on). */
  offline?: boolean;
  /** Called as bytes arrive: file name, bytes so far, total (null when unknown). */
  onProgress?: (file: string, bytes: number, total: number | null) => void;
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name) || undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

/** The hub cache root: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`. */
export function hubCacheDir(): string {
  const own = env("HF_HUB_CACHE");
  if (own) return own;
  const home = env("HF_HOME");
  if (home) return `${home.replace(/\/+$/, "")}/hub`;
  const user = env("HOME") ?? env("USERPROFILE");
  if (!user) {
    throw new Error("No hub cache directory: set HF_HUB_CACHE or HF_HOME, or pass cacheDir");
  }
  return `${user}/.cache/huggingface/hub`;
}

/** Whether `$HF_HUB_OFFLINE` asks for offline mode (1, true, yes, on). */
export function hubOffline(): boolean {
  return /^(1|true|yes|on)$/i.test(env("HF_HUB_OFFLINE") ?? "");
}

const REPO_RE = /^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/;
const COMMIT_RE = /^[0-9a-f]{40}$/;

function checkIds(repoId: string, revision: string): void {
  if (!REPO_RE.test(repoId) || repoId.includes("..")) {
    throw new TypeError(`Invalid repo id "${repoId}": expected "owner/name"`);
  }
  if (revision === "" || revision.includes("..") || /^\/|\/$|\\/.test(revision)) {
    throw new TypeError(`Invalid revision "${revision}" for ${repoId}`);
  }
}

/** The repo's folder in the cache: `{cacheDir}/models--owner--name`. */
export function repoCacheDir(cacheDir: string, repoId: string): string {
  return `${cacheDir.replace(/\/+$/, "")}/models--${repoId.replace("/", "--")}`;
}

/** Shard file names of an index (unique, in first-seen order). */
async function shardsOf(indexPath: string): Promise<string[]> {
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(indexPath));
  } catch (e) {
    throw new SyntaxError(`${indexPath}: not valid JSON (${(e as Error).message})`);
  }
  const map = (json as { weight_map?: unknown })?.weight_map;
  if (typeof map !== "object" || map === null) {
    throw new SyntaxError(`${indexPath}: missing "weight_map"`);
  }
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(map)) {
    if (typeof shard !== "string" || !isSafeRelativePath(shard)) {
      throw new SyntaxError(`${indexPath}: tensor "${tensor}" maps to invalid shard ${shard}`);
    }
    shards.add(shard);
  }
  return [...shards];
}

const isFile = async (p: string) => (await Deno.stat(p).catch(() => null))?.isFile === true;

/** What a snapshot folder lacks of a complete model (the first missing file), or null. */
async function missingFile(dir: string, files?: readonly string[]): Promise<string | null> {
  const need = files ?? ["config.json"];
  for (const f of need) if (!await isFile(`${dir}/${f}`)) return f;
  if (files) return null;
  if (await isFile(`${dir}/${INDEX_FILE}`)) {
    for (const s of await shardsOf(`${dir}/${INDEX_FILE}`)) {
      if (!await isFile(`${dir}/${s}`)) return s;
    }
    return null;
  }
  return await isFile(`${dir}/${SINGLE_FILE}`) ? null : SINGLE_FILE;
}

/** Where a lookup in the cache ended: the snapshot folder, or why there is none. */
type Lookup = { dir: string } | { why: string };

async function lookup(
  cacheDir: string,
  repoId: string,
  revision: string,
  files?: readonly string[],
): Promise<Lookup> {
  const repo = repoCacheDir(cacheDir, repoId);
  let commit = revision;
  if (!COMMIT_RE.test(revision)) {
    const ref = `${repo}/refs/${revision}`;
    try {
      commit = (await Deno.readTextFile(ref)).trim();
    } catch {
      return { why: `${ref} does not exist` };
    }
    if (!COMMIT_RE.test(commit)) {
      return { why: `${ref}: expected a 40-hex commit, got "${commit}"` };
    }
  }
  const dir = `${repo}/snapshots/${commit}`;
  const missing = await missingFile(dir, files);
  return missing ? { why: `${dir}/${missing} is missing` } : { dir };
}

/**
 * The snapshot folder of a model in the hub cache, or null when the revision is not cached
 * completely (its `refs/{revision}`, `config.json` or a weight file is missing).
 *
 * @param repoId `owner/name`
 * @param options `revision` (default "main"), `cacheDir` (default {@linkcode hubCacheDir}),
 *   `files` (check these instead of the default set)
 * @throws {TypeError} For an invalid repo id or revision.
 *
 * @example
 * ```ts ignore
 * const dir = await findCachedModel("Qwen/Qwen3-0.6B"); // null when Python never fetched it
 * ```
 */
export async function findCachedModel(
  repoId: string,
  options: Pick<DownloadOptions, "revision" | "cacheDir" | "files"> = {},
): Promise<string | null> {
  const revision = options.revision ?? "main";
  checkIds(repoId, revision);
  const r = await lookup(options.cacheDir ?? hubCacheDir(), repoId, revision, options.files);
  return "dir" in r ? r.dir : null;
}

/** What the server said about one file (HEAD, redirects not followed). */
type Probe = { found: false } | { found: true; commit: string; etag: string; size: number | null };

/** Thrown when the server cannot be reached at all (network down, DNS, refused). */
class Unreachable extends Error {}

class Hub {
  constructor(
    readonly repo: string,
    readonly revision: string,
    readonly endpoint: string,
    readonly root: string,
    readonly token: string | undefined,
    readonly onProgress: DownloadOptions["onProgress"],
  ) {}

  url(file: string, revision = this.revision): string {
    const path = file.split("/").map(encodeURIComponent).join("/");
    return `${this.endpoint}/${this.repo}/resolve/${encodeURIComponent(revision)}/${path}`;
  }

  #where(file: string): string {
    return `Downloading ${file} from ${this.repo} (revision ${this.revision})`;
  }

  #fail(file: string, res: Response): never {
    const hint = res.status === 401 || res.status === 403
      ? " (gated or private repo? pass a token or set HF_TOKEN)"
      : "";
    throw new Error(
      `${this.#where(file)} failed: HTTP ${res.status} ${res.statusText}${hint} [${
        this.url(file)
      }]`,
    );
  }

  async #fetch(url: string, file: string, init: RequestInit): Promise<Response> {
    const headers = this.token ? { authorization: `Bearer ${this.token}` } : undefined;
    try {
      return await fetch(url, { ...init, headers });
    } catch (e) {
      throw new Unreachable(`${this.#where(file)} failed: ${(e as Error).message} [${url}]`);
    }
  }

  /** HEAD: the file's commit, blob id and size (from the first answer, as HF serves LFS). */
  async probe(file: string): Promise<Probe> {
    let url = this.url(file);
    for (let hop = 0; hop < 5; hop++) {
      const res = await this.#fetch(url, file, { method: "HEAD", redirect: "manual" });
      await res.body?.cancel();
      if (res.status === 404) return { found: false };
      const h = res.headers;
      const commit = h.get("x-repo-commit");
      if (res.status >= 300 && res.status < 400 && !commit && h.get("location")) {
        url = new URL(h.get("location")!, url).href; // a renamed repo: follow, as Python does
        continue;
      }
      if (!res.ok && !(res.status >= 300 && res.status < 400)) this.#fail(file, res);
      const etag = (h.get("x-linked-etag") ?? h.get("etag") ?? "").replace(/^W\//, "")
        .replaceAll('"', "");
      if (!commit || !COMMIT_RE.test(commit) || !/^[\w.-]+$/.test(etag)) {
        throw new Error(
          `${this.#where(file)} failed: the server sent no usable X-Repo-Commit / ETag headers ` +
            `(got "${commit ?? ""}" / "${etag}") [${url}]`,
        );
      }
      const len = h.get("x-linked-size") ?? h.get("content-length");
      const size = len !== null && /^\d+$/.test(len) ? Number(len) : null;
      return { found: true, commit, etag, size };
    }
    throw new Error(`${this.#where(file)} failed: too many redirects [${this.url(file)}]`);
  }

  /** Downloads one file into the cache unless its blob is complete; false if the repo lacks it. */
  async get(file: string, required: boolean, commit?: string): Promise<string | null> {
    if (!isSafeRelativePath(file)) {
      throw new Error(`Refusing to download ${file} from ${this.repo}: not a plain relative path`);
    }
    const probe = await this.probe(file);
    if (!probe.found) {
      if (!required) return null;
      throw new Error(
        `${this.repo} (revision ${this.revision}) has no ${file}: HTTP 404 [${this.url(file)}]`,
      );
    }
    if (commit && probe.commit !== commit) {
      throw new Error(
        `${this.#where(file)} failed: the revision moved from commit ${commit} to ` +
          `${probe.commit} during the download; run again`,
      );
    }
    const blob = `${this.root}/blobs/${probe.etag}`;
    const local = await Deno.stat(blob).catch(() => null);
    if (!(local?.isFile && (probe.size === null || local.size === probe.size))) {
      await this.#download(file, blob, probe);
    }
    await link(blob, `${this.root}/snapshots/${probe.commit}/${file}`, file);
    return probe.commit;
  }

  async #download(file: string, blob: string, probe: Probe & { found: true }): Promise<void> {
    // the blob of the commit we probed, whatever the branch does meanwhile
    const res = await this.#fetch(this.url(file, probe.commit), file, { method: "GET" });
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      this.#fail(file, res);
    }
    const lenHeader = res.headers.get("content-length");
    const total = lenHeader !== null && /^\d+$/.test(lenHeader) ? Number(lenHeader) : probe.size;
    await Deno.mkdir(`${this.root}/blobs`, { recursive: true });
    const tmp = `${blob}.incomplete-${crypto.randomUUID().slice(0, 8)}`;
    let bytes = 0;
    const counter = new TransformStream<Uint8Array, Uint8Array>({
      transform: (chunk, ctl) => {
        bytes += chunk.length;
        this.onProgress?.(file, bytes, total);
        ctl.enqueue(chunk);
      },
    });
    try {
      const out = await Deno.open(tmp, { write: true, create: true, truncate: true });
      await res.body.pipeThrough(counter).pipeTo(out.writable); // closes `out`
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw new Error(`${this.#where(file)} failed: ${(e as Error).message}`, { cause: e });
    }
    if (total !== null && bytes !== total) {
      await Deno.remove(tmp).catch(() => {});
      throw new Error(
        `${this.#where(file)} failed: got ${bytes} bytes, expected ${total} (connection cut?)`,
      );
    }
    await Deno.rename(tmp, blob);
  }
}

/** Points `entry` at `blob` with a relative symlink (a copy where links are not allowed). */
async function link(blob: string, entry: string, file: string): Promise<void> {
  const depth = file.split("/").length + 1; // snapshots/{commit}/{file…}
  const target = `${"../".repeat(depth)}blobs/${blob.slice(blob.lastIndexOf("/") + 1)}`;
  await Deno.mkdir(entry.slice(0, entry.lastIndexOf("/")), { recursive: true });
  const old = await Deno.lstat(entry).catch(() => null);
  if (old?.isSymlink && (await Deno.readLink(entry)) === target) return;
  if (old) await Deno.remove(entry);
  try {
    await Deno.symlink(target, entry);
  } catch {
    await Deno.copyFile(blob, entry);
  }
}

/**
 * Finds a model in the hub cache or downloads it there from the Hugging Face Hub (or a server
 * with the same URL layout), skipping blobs already complete; returns the snapshot folder.
 *
 * @param repoId `owner/name`, e.g. `nvidia/Qwen3-8B-DMS-8x`
 * @param options revision, cache root, endpoint, token, file list, offline, progress callback
 * @returns the snapshot folder `{cacheDir}/models--owner--name/snapshots/{commit}`
 * @throws {TypeError} For an invalid repo id, revision or file name.
 * @throws {Error} Naming the repo, file and HTTP status when a required file cannot be fetched;
 *   offline, naming the cache file that is missing.
 */
export async function downloadModel(
  repoId: string,
  options: DownloadOptions = {},
): Promise<string> {
  const revision = options.revision ?? "main";
  checkIds(repoId, revision);
  for (const f of options.files ?? []) {
    if (!isSafeRelativePath(f)) {
      throw new Error(`Refusing to download ${f} from ${repoId}: not a plain relative path`);
    }
  }
  const cacheDir = options.cacheDir ?? hubCacheDir();
  if (options.offline ?? hubOffline()) {
    const r = await lookup(cacheDir, repoId, revision, options.files);
    if ("dir" in r) return r.dir;
    throw new Error(
      `${repoId} (revision ${revision}) is not in the Hugging Face cache and HF_HUB_OFFLINE ` +
        `forbids downloading it: ${r.why}`,
    );
  }
  const endpoint = (options.endpoint ?? env("HF_ENDPOINT") ?? "https://huggingface.co")
    .replace(/\/+$/, "");
  const root = repoCacheDir(cacheDir, repoId);
  const hub = new Hub(
    repoId,
    revision,
    endpoint,
    root,
    options.token ?? env("HF_TOKEN"),
    options.onProgress,
  );
  let commit: string;
  try {
    const first = options.files?.[0] ?? "config.json";
    commit = (await hub.get(first, true))!;
  } catch (e) {
    if (!(e instanceof Unreachable)) throw e;
    const r = await lookup(cacheDir, repoId, revision, options.files); // offline fallback
    if ("dir" in r) return r.dir;
    throw e;
  }
  if (options.files) {
    for (const f of options.files.slice(1)) await hub.get(f, true, commit);
  } else {
    await hub.get("tokenizer.json", true, commit);
    await hub.get("tokenizer_config.json", false, commit);
    await hub.get("generation_config.json", false, commit);
    const dir = `${root}/snapshots/${commit}`;
    if (await hub.get(INDEX_FILE, false, commit)) {
      for (const shard of await shardsOf(`${dir}/${INDEX_FILE}`)) {
        await hub.get(shard, true, commit);
      }
    } else {
      await hub.get(SINGLE_FILE, true, commit);
    }
  }
  if (revision !== commit) await writeTextFileAtomic(`${root}/refs/${revision}`, commit);
  return `${root}/snapshots/${commit}`;
}
