/**
 * Hugging Face Hub download: fetches the files a model needs into a local folder.
 *
 * Each file comes from `{endpoint}/{repo}/resolve/{revision}/{file}` and lands in
 * `{cacheDir}/{repo with "/" → "--"}/{revision}/{file}`. A file already there with the size the
 * server reports (HEAD: `x-linked-size` for LFS files, else `content-length`) is skipped. Others
 * are streamed to disk (never held whole in memory) under a temporary name, checked against the
 * announced length, then renamed into place, so an interrupted download never leaves a partial
 * file under the real name.
 *
 * Default file set: `config.json`, `tokenizer.json` (required); `tokenizer_config.json`,
 * `generation_config.json` (optional); then `model.safetensors`, or, when the repo has
 * `model.safetensors.index.json`, the index and every shard it names.
 *
 * @example
 * ```ts
 * import { downloadModel } from "./hub.ts";
 * const dir = await downloadModel("nvidia/Qwen3-8B-DMS-8x", { cacheDir: "/tmp/hub" });
 * // dir = "/tmp/hub/nvidia--Qwen3-8B-DMS-8x/main", holding config.json, tokenizer.json, shards...
 * ```
 *
 * @module
 */

import { INDEX_FILE, isSafeRelativePath, SINGLE_FILE } from "./safetensors.ts";

/** Options of {@link downloadModel}. */
export interface DownloadOptions {
  /** Branch, tag or commit (default "main"). */
  revision?: string;
  /** Root of the local cache (default `$DMS_CACHE`, else `$XDG_CACHE_HOME/hyperscale-dms/hub`, else `~/.cache/hyperscale-dms/hub`). */
  cacheDir?: string;
  /** Hub base URL (default "https://huggingface.co"; `$HF_ENDPOINT` when set). */
  endpoint?: string;
  /** Access token for gated or private repos (default `$HF_TOKEN` when set). */
  token?: string;
  /** Download exactly these files (all required) instead of the default set. */
  files?: string[];
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

/** The default cache root (see {@link DownloadOptions.cacheDir}). */
export function defaultCacheDir(): string {
  const own = env("DMS_CACHE");
  if (own) return own;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/hyperscale-dms/hub`;
  const home = env("HOME") ?? env("USERPROFILE");
  if (!home) throw new Error("No cache directory: set DMS_CACHE or pass cacheDir");
  return `${home}/.cache/hyperscale-dms/hub`;
}

const REPO_RE = /^[A-Za-z0-9][\w.-]*(\/[A-Za-z0-9][\w.-]*)?$/;

/** Local folder of a repo at a revision. */
export function localModelDir(cacheDir: string, repoId: string, revision = "main"): string {
  return `${cacheDir.replace(/\/$/, "")}/${repoId.replace("/", "--")}/${
    revision.replaceAll("/", "--")
  }`;
}

/** Outcome of a HEAD request. */
type Probe = { found: false } | { found: true; size: number | null };

class Hub {
  constructor(
    readonly repo: string,
    readonly revision: string,
    readonly endpoint: string,
    readonly dir: string,
    readonly token: string | undefined,
    readonly onProgress: DownloadOptions["onProgress"],
  ) {}

  url(file: string): string {
    const path = file.split("/").map(encodeURIComponent).join("/");
    return `${this.endpoint}/${this.repo}/resolve/${encodeURIComponent(this.revision)}/${path}`;
  }

  #headers(): HeadersInit {
    return this.token ? { authorization: `Bearer ${this.token}` } : {};
  }

  #fail(file: string, res: Response): never {
    const hint = res.status === 401 || res.status === 403
      ? " (gated or private repo? pass a token or set HF_TOKEN)"
      : "";
    throw new Error(
      `Downloading ${file} from ${this.repo} (revision ${this.revision}) failed: ` +
        `HTTP ${res.status} ${res.statusText}${hint} [${this.url(file)}]`,
    );
  }

  async #fetch(file: string, method: "HEAD" | "GET"): Promise<Response> {
    try {
      return await fetch(this.url(file), { method, headers: this.#headers() });
    } catch (e) {
      throw new Error(
        `Downloading ${file} from ${this.repo} (revision ${this.revision}) failed: ` +
          `${(e as Error).message} [${this.url(file)}]`,
      );
    }
  }

  /** HEAD: does the file exist, and how big is it? */
  async probe(file: string): Promise<Probe> {
    const res = await this.#fetch(file, "HEAD");
    await res.body?.cancel();
    if (res.status === 404) return { found: false };
    if (!res.ok) this.#fail(file, res);
    const len = res.headers.get("x-linked-size") ?? res.headers.get("content-length");
    const size = len !== null && /^\d+$/.test(len) ? Number(len) : null;
    return { found: true, size };
  }

  /** Downloads one file unless present with the right size; false if the repo lacks it. */
  async get(file: string, required: boolean): Promise<boolean> {
    if (!isSafeRelativePath(file)) {
      throw new Error(`Refusing to download ${file} from ${this.repo}: not a plain relative path`);
    }
    const dest = `${this.dir}/${file}`;
    const probe = await this.probe(file);
    if (!probe.found) {
      if (!required) return false;
      throw new Error(
        `${this.repo} (revision ${this.revision}) has no ${file}: HTTP 404 [${this.url(file)}]`,
      );
    }
    const local = await Deno.stat(dest).catch(() => null);
    if (local?.isFile && (probe.size === null || local.size === probe.size)) return true;

    const res = await this.#fetch(file, "GET");
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      this.#fail(file, res);
    }
    const lenHeader = res.headers.get("content-length");
    const total = lenHeader !== null && /^\d+$/.test(lenHeader) ? Number(lenHeader) : probe.size;
    await Deno.mkdir(dest.slice(0, dest.lastIndexOf("/")), { recursive: true });
    const tmp = `${dest}.part-${crypto.randomUUID().slice(0, 8)}`;
    let bytes = 0;
    const counter = new TransformStream<Uint8Array, Uint8Array>({
      transform: (chunk, ctl) => {
        bytes += chunk.length;
        this.onProgress?.(file, bytes, total);
        ctl.enqueue(chunk);
      },
    });
    const where = `Downloading ${file} from ${this.repo} (revision ${this.revision})`;
    try {
      const out = await Deno.open(tmp, { write: true, create: true, truncate: true });
      await res.body.pipeThrough(counter).pipeTo(out.writable); // closes `out`
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw new Error(`${where} failed: ${(e as Error).message}`, { cause: e });
    }
    if (total !== null && bytes !== total) {
      await Deno.remove(tmp).catch(() => {});
      throw new Error(`${where} failed: got ${bytes} bytes, expected ${total} (connection cut?)`);
    }
    await Deno.rename(tmp, dest);
    return true;
  }
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

/**
 * Downloads a model from the Hugging Face Hub (or a server with the same URL layout) into the
 * local cache, skipping files already complete.
 *
 * @param repoId `owner/name`, e.g. `nvidia/Qwen3-8B-DMS-8x`
 * @param options revision, cache folder, endpoint, token, file list, progress callback
 * @returns the local folder holding the files
 * @throws Error naming the repo, file and HTTP status when a required file cannot be fetched
 */
export async function downloadModel(
  repoId: string,
  options: DownloadOptions = {},
): Promise<string> {
  if (!REPO_RE.test(repoId) || repoId.includes("..")) {
    throw new TypeError(`Invalid repo id "${repoId}": expected "owner/name"`);
  }
  const revision = options.revision ?? "main";
  if (revision === "" || revision.includes("..")) {
    throw new TypeError(`Invalid revision "${revision}" for ${repoId}`);
  }
  const endpoint = (options.endpoint ?? env("HF_ENDPOINT") ?? "https://huggingface.co")
    .replace(/\/+$/, "");
  const dir = localModelDir(options.cacheDir ?? defaultCacheDir(), repoId, revision);
  await Deno.mkdir(dir, { recursive: true });
  const hub = new Hub(
    repoId,
    revision,
    endpoint,
    dir,
    options.token ?? env("HF_TOKEN"),
    options.onProgress,
  );

  if (options.files) {
    for (const f of options.files) await hub.get(f, true);
    return dir;
  }
  await hub.get("config.json", true);
  await hub.get("tokenizer.json", true);
  await hub.get("tokenizer_config.json", false);
  await hub.get("generation_config.json", false);
  if (await hub.get(INDEX_FILE, false)) {
    for (const shard of await shardsOf(`${dir}/${INDEX_FILE}`)) await hub.get(shard, true);
  } else {
    await hub.get(SINGLE_FILE, true);
  }
  return dir;
}
