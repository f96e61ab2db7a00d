import assert from "node:assert/strict";
import { downloadModel, localModelDir } from "../../src/io/hub.ts";
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

/** repo → revision → file → bytes. Files marked `lfs` are served through a redirect, as HF does. */
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

/** A loopback server in the Hub's URL layout; records every request as "METHOD path". */
function serveHub() {
  const log: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    log.push(`${req.method} ${url.pathname}`);
    const cdn = url.pathname.match(/^\/cdn\/(.+)$/);
    const m = url.pathname.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    let body: Uint8Array<ArrayBuffer> | undefined;
    if (cdn) {
      const [repo, rev, file] = JSON.parse(decodeURIComponent(cdn[1]));
      body = REPOS[repo][rev][file];
    } else if (m) {
      const [repo, rev, file] = [m[1], decodeURIComponent(m[2]), decodeURIComponent(m[3])];
      if (repo === "acme/private" && req.headers.get("authorization") !== "Bearer sekrit") {
        return new Response("gated", { status: 401, statusText: "Unauthorized" });
      }
      if (repo === "acme/flaky" && file === "model.safetensors" && req.method === "GET") {
        return new Response("boom", { status: 500, statusText: "Internal Server Error" });
      }
      body = REPOS[repo]?.[rev]?.[file];
      if (body && file.endsWith(".safetensors")) {
        // LFS file: redirect to the CDN, announcing the size like HF's x-linked-size.
        return new Response(null, {
          status: 302,
          headers: {
            location: `/cdn/${encodeURIComponent(JSON.stringify([repo, rev, file]))}`,
            "x-linked-size": String(body.length),
          },
        });
      }
    }
    if (!body) return new Response("Entry not found", { status: 404, statusText: "Not Found" });
    return new Response(req.method === "HEAD" ? null : body, {
      headers: { "content-length": String(body.length) },
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

Deno.test("downloadModel fetches a sharded checkpoint through its index and skips complete files", async () => {
  await withHub(async ({ endpoint, log }, cacheDir) => {
    const progress: [string, number, number | null][] = [];
    const dir = await downloadModel("acme/tiny-sharded", {
      endpoint,
      cacheDir,
      onProgress: (f, b, t) => progress.push([f, b, t]),
    });
    assert.equal(dir, `${cacheDir}/acme--tiny-sharded/main`);
    assert.equal(dir, localModelDir(cacheDir, "acme/tiny-sharded"));
    for (const [file, bytes] of Object.entries(REPOS["acme/tiny-sharded"].main)) {
      assert.deepEqual(await Deno.readFile(`${dir}/${file}`), bytes, file);
    }
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, Object.keys(REPOS["acme/tiny-sharded"].main).sort()); // no temp files
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

    // A file with the wrong size (e.g. left by another tool) is downloaded again.
    await Deno.writeFile(`${dir}/model-00002-of-00002.safetensors`, SHARD2.slice(0, 100));
    log.length = 0;
    await downloadModel("acme/tiny-sharded", { endpoint, cacheDir });
    assert.deepEqual(gets(log), [
      "GET /acme/tiny-sharded/resolve/main/model-00002-of-00002.safetensors",
    ]);
    assert.deepEqual(await Deno.readFile(`${dir}/model-00002-of-00002.safetensors`), SHARD2);
  });
});

Deno.test("downloadModel fetches a single-file checkpoint at a revision, and an explicit file list", async () => {
  await withHub(async ({ endpoint, log }, cacheDir) => {
    const dir = await downloadModel("acme/tiny", { endpoint, cacheDir, revision: "v1" });
    assert.equal(dir, `${cacheDir}/acme--tiny/v1`);
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
  });
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
    const flaky = [...Deno.readDirSync(`${cacheDir}/acme--flaky/main`)].map((e) => e.name).sort();
    assert.deepEqual(flaky, ["config.json", "tokenizer.json"]); // no partial weights
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
