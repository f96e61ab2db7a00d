import assert from "node:assert/strict";
import {
  downloadModel,
  findCachedModel,
  hubCacheDir,
  hubOffline,
  repoCacheDir,
} from "../../src/io/hub.ts";
import { encodeSafetensors, openCheckpoint } from "../../src/io/safetensors.ts";
import { loadConfig } from "../../src/model/config.ts";

const enc = (s: string) => new TextEncoder().encode(s);
const CONFIG = enc(JSON.stringify({
  model_type: "qwen3",
  hidden_size: 8,
  num_hidden_layers: 1,
  num_attention_heads: 2,
  intermediate_size: 16,
  vocab_size: 32,
  max_position_embeddings: 64,
}));
const TOKENIZER = enc(JSON.stringify({ model: { type: "BPE", vocab: {}, merges: [] } }));
const SHARD1 = encodeSafetensors({
  "model.embed_tokens.weight": {
    dtype: "BF16",
    shape: [32, 8],
    data: new Float32Array(256).fill(1),
  },
});
// Large enough to arrive in several chunks.
const SHARD2 = encodeSafetensors({
  "model.norm.weight": { dtype: "F32", shape: [300_000], data: new Float32Array(300_000).fill(2) },
});
const INDEX = enc(JSON.stringify({
  metadata: { total_size: SHARD1.length + SHARD2.length },
  weight_map: {
    "model.embed_tokens.weight": "model-00001-of-00002.safetensors",
    "model.norm.weight": "model-00002-of-00002.safetensors",
  },
}));
const SINGLE = encodeSafetensors({ w: { dtype: "F32", shape: [2], data: [1, 2] } });

/** repo → revision → file → bytes. `.safetensors` files are served through a redirect, as HF does LFS. */
const REPOS: Record<string, Record<string, Record<string, Uint8Array<ArrayBuffer>>>> = {
  "acme/tiny-sharded": {
    main: {
      "config.json": CONFIG,
      "tokenizer.json": TOKENIZER,
      "model.safetensors.index.json": INDEX,
      "model-00001-of-00002.safetensors": SHARD1,
      "model-00002-of-00002.safetensors": SHARD2,
    },
  },
  "acme/tiny": {
    v1: {
      "config.json": CONFIG,
      "tokenizer.json": TOKENIZER,
      "tokenizer_config.json": enc("{}"),
      "generation_config.json": enc('{"eos_token_id": 3}'),
      "model.safetensors": SINGLE,
    },
  },
  "acme/private": { main: { "config.json": CONFIG } },
  "acme/no-weights": { main: { "config.json": CONFIG, "tokenizer.json": TOKENIZER } },
  "acme/flaky": {
    main: { "config.json": CONFIG, "tokenizer.json": TOKENIZER, "model.safetensors": SINGLE },
  },
};

/** The commit a revision points to (the server's X-Repo-Commit): a stable fake sha1. */
const commitOf = (repo: string, rev: string) =>
  Array.from(new TextEncoder().encode(`${repo}@${rev}`.padEnd(40, "#")).slice(0, 40))
    .map((b) => (b % 16).toString(16)).join("");

/** A fake git blob id of some bytes (the ETag; LFS files get a 64-hex one as sha256s do). */
function etagOf(bytes: Uint8Array, lfs: boolean): string {
  let h = 2166136261;
  for (const b of bytes) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h.toString(16).padStart(8, "0").repeat(lfs ? 8 : 5);
}

/** Finds the revision a name or commit refers to. */
function revisionOf(repo: string, name: string): string | undefined {
  const revs = REPOS[repo];
  if (!revs) return undefined;
  return name in revs ? name : Object.keys(revs).find((r) => commitOf(repo, r) === name);
}

/**
 * A loopback server in the Hub's URL layout and headers (X-Repo-Commit, ETag, LFS through a 302
 * with X-Linked-Etag / X-Linked-Size); records every request as "METHOD path".
 */
function serveHub() {
  const log: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    log.push(`${req.method} ${url.pathname}`);
    const cdn = url.pathname.match(/^\/cdn\/(.+)$/);
    const m = url.pathname.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    if (cdn) {
      const [repo, rev, file] = JSON.parse(decodeURIComponent(cdn[1]));
      const body = REPOS[repo][rev][file];
      return new Response(req.method === "HEAD" ? null : body, {
        headers: { "content-length": String(body.length) },
      });
    }
    if (!m) return new Response("Not Found", { status: 404, statusText: "Not Found" });
    const [repo, file] = [m[1], decodeURIComponent(m[3])];
    const rev = revisionOf(repo, decodeURIComponent(m[2]));
    if (repo === "acme/private" && req.headers.get("authorization") !== "Bearer sekrit") {
      return new Response("gated", { status: 401, statusText: "Unauthorized" });
    }
    if (repo === "acme/flaky" && file === "model.safetensors" && req.method === "GET") {
      return new Response("boom", { status: 500, statusText: "Internal Server Error" });
    }
    const body = rev === undefined ? undefined : REPOS[repo][rev][file];
    if (!body) return new Response("Entry not found", { status: 404, statusText: "Not Found" });
    const commit = commitOf(repo, rev!);
    if (file.endsWith(".safetensors")) {
      return new Response(null, {
        status: 302,
        headers: {
          location: `/cdn/${encodeURIComponent(JSON.stringify([repo, rev, file]))}`,
          "x-repo-commit": commit,
          "x-linked-etag": `"${etagOf(body, true)}"`,
          "x-linked-size": String(body.length),
        },
      });
    }
    return new Response(req.method === "HEAD" ? null : body, {
      headers: {
        "content-length": String(body.length),
        "x-repo-commit": commit,
        etag: `"${etagOf(body, false)}"`,
      },
    });
  });
  const endpoint = `http://127.0.0.1:${server.addr.port}`;
  return { server, endpoint, log };
}

async function withHub(
  fn: (hub: ReturnType<typeof serveHub>, cacheDir: string) => Promise<void>,
): Promise<void> {
  const hub = serveHub();
  const cacheDir = await Deno.makeTempDir({ prefix: "dms_hub_" });
  try {
    await fn(hub, cacheDir);
  } finally {
    await hub.server.shutdown();
    await Deno.remove(cacheDir, { recursive: true });
  }
}

const gets = (log: string[]) => log.filter((l) => l.startsWith("GET /acme"));

const snapshot = (cacheDir: string, repo: string, rev: string) =>
  `${repoCacheDir(cacheDir, repo)}/snapshots/${commitOf(repo, rev)}`;

Deno.test("downloadModel fetches a sharded checkpoint into the hub cache layout and skips complete blobs", async () => {
  await withHub(async ({ endpoint, log }, cacheDir) => {
    const progress: [string, number, number | null][] = [];
    const dir = await downloadModel("acme/tiny-sharded", {
      endpoint,
      cacheDir,
      onProgress: (f, b, t) => progress.push([f, b, t]),
    });
    const root = `${cacheDir}/models--acme--tiny-sharded`;
    assert.equal(dir, `${root}/snapshots/${commitOf("acme/tiny-sharded", "main")}`);
    assert.equal(
      await Deno.readTextFile(`${root}/refs/main`),
      commitOf("acme/tiny-sharded", "main"),
    );
    for (const [file, bytes] of Object.entries(REPOS["acme/tiny-sharded"].main)) {
      assert.deepEqual(await Deno.readFile(`${dir}/${file}`), bytes, file);
      // each snapshot entry is a relative link to its blob, named by the ETag
      const blob = etagOf(bytes, file.endsWith(".safetensors"));
      assert.equal(await Deno.readLink(`${dir}/${file}`), `../../blobs/${blob}`, file);
      assert.deepEqual(await Deno.readFile(`${root}/blobs/${blob}`), bytes, file);
    }
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, Object.keys(REPOS["acme/tiny-sharded"].main).sort());
    const blobs = [...Deno.readDirSync(`${root}/blobs`)].map((e) => e.name);
    assert.equal(blobs.length, 5); // no .incomplete leftovers
    assert.deepEqual(
      progress.filter(([f]) => f === "model-00002-of-00002.safetensors").at(-1),
      ["model-00002-of-00002.safetensors", SHARD2.length, SHARD2.length],
    );
    // Optional files were asked for and are absent; nothing else was fetched.
    assert.ok(log.includes("HEAD /acme/tiny-sharded/resolve/main/tokenizer_config.json"));
    assert.equal(gets(log).length, 5);

    // The folder loads.
    assert.equal((await loadConfig(dir)).hiddenSize, 8);
    {
      using ckpt = await openCheckpoint(dir);
      assert.deepEqual(
        (await ckpt.read("model.norm.weight", { rowEnd: 2 })).data,
        new Float32Array([2, 2]),
      );
    }

    // Second call: HEAD only, no downloads.
    log.length = 0;
    assert.equal(await downloadModel("acme/tiny-sharded", { endpoint, cacheDir }), dir);
    assert.deepEqual(gets(log), []);

    // A blob with the wrong size (e.g. left by an interrupted tool) is downloaded again.
    const blob2 = `${root}/blobs/${etagOf(SHARD2, true)}`;
    await Deno.writeFile(blob2, SHARD2.slice(0, 100));
    log.length = 0;
    await downloadModel("acme/tiny-sharded", { endpoint, cacheDir });
    assert.deepEqual(gets(log), [
      `GET /acme/tiny-sharded/resolve/${
        commitOf("acme/tiny-sharded", "main")
      }/model-00002-of-00002.safetensors`,
    ]);
    assert.deepEqual(await Deno.readFile(`${dir}/model-00002-of-00002.safetensors`), SHARD2);
  });
});

Deno.test("downloadModel fetches a single-file checkpoint at a revision, and an explicit file list", async () => {
  await withHub(async ({ endpoint, log }, cacheDir) => {
    const dir = await downloadModel("acme/tiny", { endpoint, cacheDir, revision: "v1" });
    assert.equal(dir, snapshot(cacheDir, "acme/tiny", "v1"));
    assert.equal(
      await Deno.readTextFile(`${cacheDir}/models--acme--tiny/refs/v1`),
      commitOf("acme/tiny", "v1"),
    );
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, Object.keys(REPOS["acme/tiny"].v1).sort());
    assert.ok(log.includes("HEAD /acme/tiny/resolve/v1/model.safetensors.index.json"));
    assert.deepEqual(await Deno.readFile(`${dir}/model.safetensors`), SINGLE);

    const cache2 = await Deno.makeTempDir({ dir: cacheDir });
    const only = await downloadModel("acme/tiny", {
      endpoint,
      cacheDir: cache2,
      revision: "v1",
      files: ["config.json"],
    });
    assert.deepEqual([...Deno.readDirSync(only)].map((e) => e.name), ["config.json"]);
    // a commit hash as the revision: the same snapshot, no ref written for it
    const byCommit = await downloadModel("acme/tiny", {
      endpoint,
      cacheDir: cache2,
      revision: commitOf("acme/tiny", "v1"),
      files: ["config.json"],
    });
    assert.equal(byCommit, only);
    assert.deepEqual(
      [...Deno.readDirSync(`${repoCacheDir(cache2, "acme/tiny")}/refs`)].map((e) => e.name),
      ["v1"],
    );
  });
});

/** Writes a model into `cacheDir` the way Python's huggingface_hub lays it out. */
async function pythonCache(cacheDir: string, repo: string, files: Record<string, Uint8Array>) {
  const root = repoCacheDir(cacheDir, repo), commit = commitOf(repo, "main");
  await Deno.mkdir(`${root}/refs`, { recursive: true });
  await Deno.mkdir(`${root}/blobs`, { recursive: true });
  await Deno.mkdir(`${root}/snapshots/${commit}`, { recursive: true });
  await Deno.writeTextFile(`${root}/refs/main`, commit); // Python writes no newline
  for (const [f, bytes] of Object.entries(files)) {
    const etag = etagOf(bytes, f.endsWith(".safetensors"));
    await Deno.writeFile(`${root}/blobs/${etag}`, bytes);
    await Deno.symlink(`../../blobs/${etag}`, `${root}/snapshots/${commit}/${f}`);
  }
  return `${root}/snapshots/${commit}`;
}

Deno.test("a model Python already cached is found without a download, offline or when the server is down", async () => {
  await withHub(async ({ endpoint, log }, cacheDir) => {
    const files = REPOS["acme/tiny-sharded"].main;
    const dir = await pythonCache(cacheDir, "acme/tiny-sharded", files);
    assert.equal(await findCachedModel("acme/tiny-sharded", { cacheDir }), dir);
    assert.equal(await downloadModel("acme/tiny-sharded", { cacheDir, offline: true }), dir);
    // online: HEAD requests only, every blob is already complete
    assert.equal(await downloadModel("acme/tiny-sharded", { endpoint, cacheDir }), dir);
    assert.deepEqual(gets(log), []);
    assert.ok(log.length > 0);
    // unreachable server: the cached snapshot of the revision
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const dead = `http://127.0.0.1:${(l.addr as Deno.NetAddr).port}`;
    l.close();
    assert.equal(await downloadModel("acme/tiny-sharded", { endpoint: dead, cacheDir }), dir);

    // incomplete: a shard the index names is gone → not found, and offline says which file
    await Deno.remove(`${dir}/model-00002-of-00002.safetensors`);
    assert.equal(await findCachedModel("acme/tiny-sharded", { cacheDir }), null);
    await assert.rejects(
      downloadModel("acme/tiny-sharded", { cacheDir, offline: true }),
      /acme\/tiny-sharded \(revision main\) is not in the Hugging Face cache and HF_HUB_OFFLINE forbids downloading it: .*snapshots\/[0-9a-f]{40}\/model-00002-of-00002\.safetensors is missing/,
    );
    await assert.rejects(
      downloadModel("acme/other", { cacheDir, offline: true }),
      /acme\/other \(revision main\) is not in the Hugging Face cache .*models--acme--other\/refs\/main does not exist/,
    );
  });
});

Deno.test("the hub cache root follows HF_HUB_CACHE, then HF_HOME, then ~/.cache, and HF_HUB_OFFLINE is honoured", async () => {
  const saved = ["HF_HUB_CACHE", "HF_HOME", "HOME", "HF_HUB_OFFLINE"].map((k) =>
    [k, Deno.env.get(k)] as const
  );
  const cacheDir = await Deno.makeTempDir({ prefix: "dms_hub_" });
  try {
    Deno.env.delete("HF_HUB_CACHE");
    Deno.env.delete("HF_HOME");
    Deno.env.set("HOME", "/home/u");
    assert.equal(hubCacheDir(), "/home/u/.cache/huggingface/hub");
    Deno.env.set("HF_HOME", "/data/hf/");
    assert.equal(hubCacheDir(), "/data/hf/hub");
    Deno.env.set("HF_HUB_CACHE", cacheDir);
    assert.equal(hubCacheDir(), cacheDir);
    for (const [v, on] of [["1", true], ["ON", true], ["0", false], ["", false]] as const) {
      Deno.env.set("HF_HUB_OFFLINE", v);
      assert.equal(hubOffline(), on, v);
    }
    // env only: offline and the cache root from the environment; no endpoint is ever asked
    const dir = await pythonCache(cacheDir, "acme/tiny", REPOS["acme/tiny"].v1);
    Deno.env.set("HF_HUB_OFFLINE", "1");
    assert.equal(await downloadModel("acme/tiny", { endpoint: "http://127.0.0.1:9" }), dir);
  } finally {
    for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("downloadModel errors name the repo, the file and the HTTP status", async () => {
  await withHub(async ({ endpoint }, cacheDir) => {
    await assert.rejects(
      downloadModel("acme/private", { endpoint, cacheDir, files: ["config.json"] }),
      /config.json from acme\/private \(revision main\) failed: HTTP 401 Unauthorized \(gated or private repo\?/,
    );
    // With the token it works.
    const dir = await downloadModel("acme/private", {
      endpoint,
      cacheDir,
      token: "sekrit",
      files: ["config.json"],
    });
    assert.deepEqual(await Deno.readFile(`${dir}/config.json`), CONFIG);

    await assert.rejects(
      downloadModel("acme/no-weights", { endpoint, cacheDir }),
      /acme\/no-weights \(revision main\) has no model.safetensors: HTTP 404/,
    );
    await assert.rejects(
      downloadModel("acme/missing", { endpoint, cacheDir }),
      /acme\/missing \(revision main\) has no config.json: HTTP 404/,
    );
    await assert.rejects(
      downloadModel("acme/flaky", { endpoint, cacheDir }),
      /model.safetensors from acme\/flaky \(revision main\) failed: HTTP 500/,
    );
    const flaky = [...Deno.readDirSync(snapshot(cacheDir, "acme/flaky", "main"))]
      .map((e) => e.name).sort();
    assert.deepEqual(flaky, ["config.json", "tokenizer.json"]); // no partial weights
    assert.equal(
      [...Deno.readDirSync(`${repoCacheDir(cacheDir, "acme/flaky")}/blobs`)].length,
      2, // no .incomplete blob left behind
    );
    assert.equal(await findCachedModel("acme/flaky", { cacheDir }), null); // no ref: incomplete
    await assert.rejects(downloadModel("../etc", { endpoint, cacheDir }), TypeError);
    await assert.rejects(
      downloadModel("acme/tiny", { endpoint, cacheDir, revision: "../x" }),
      TypeError,
    );
    await assert.rejects(
      downloadModel("acme/tiny", { endpoint, cacheDir, files: ["../config.json"] }),
      /not a plain relative path/,
    );
  });
});

Deno.test("downloadModel reports an unreachable endpoint with the repo and file", async () => {
  const cacheDir = await Deno.makeTempDir({ prefix: "dms_hub_" });
  try {
    // Bind a port, then close it, so nothing listens there.
    const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = (l.addr as Deno.NetAddr).port;
    l.close();
    await assert.rejects(
      downloadModel("acme/tiny", { endpoint: `http://127.0.0.1:${port}`, cacheDir }),
      /Downloading config.json from acme\/tiny \(revision main\) failed: .*\[http:\/\/127.0.0.1:\d+\/acme\/tiny\/resolve\/main\/config.json\]/,
    );
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});
