/**
 * Where a command's model comes from: a folder (positional) or `--hub owner/name` (found in the
 * Hugging Face cache or downloaded into it, with a progress bar; `HF_HUB_OFFLINE=1` honoured),
 * plus the prompt: text through the folder's tokenizer, or token ids.
 *
 * @module
 */

import { downloadModel } from "../io/hub.ts";
import { checkTokenizerMatchesConfig, loadTokenizer, type Tokenizer } from "../io/tokenizer.ts";
import type { ModelConfig } from "../model/config.ts";
import { type Parsed, str, UsageError } from "./_command.ts";
import { progress } from "./_progress.ts";

/** Flags of a model source, for a command's `parseArgs` options. */
export const SOURCE_FLAGS = {
  hub: { type: "string" },
  revision: { type: "string" },
} as const;

/** Usage lines of {@linkcode SOURCE_FLAGS}. */
export const SOURCE_USAGE =
  `  MODEL               a Hugging Face model folder (config.json + safetensors)
  --hub OWNER/NAME    a hub model instead: found in the Hugging Face cache ($HF_HUB_CACHE, else
                      $HF_HOME/hub, else ~/.cache/huggingface/hub) or downloaded into it;
                      HF_HUB_OFFLINE=1 never downloads
  --revision REV      hub branch, tag or commit (default main)`;

/**
 * Checks the source arguments (exactly one of a folder and `--hub`) without touching a file.
 *
 * @throws {UsageError} For none or both, or a malformed hub id.
 */
export function checkSource(p: Parsed): { folder?: string; hub?: string; revision?: string } {
  const folder = p.positionals[0], hub = str(p, "hub"), revision = str(p, "revision");
  if (folder === undefined && hub === undefined) {
    throw new UsageError("expected a model folder or --hub OWNER/NAME");
  }
  if (folder !== undefined && hub !== undefined) {
    throw new UsageError("give a model folder or --hub OWNER/NAME, not both");
  }
  if (hub !== undefined && !/^[A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*$/.test(hub)) {
    throw new UsageError(`--hub must be OWNER/NAME, got "${hub}"`);
  }
  if (revision !== undefined && hub === undefined) {
    throw new UsageError("--revision needs --hub");
  }
  return { folder, hub, revision };
}

/**
 * The model folder: the positional as it is (it must be a folder), or the hub snapshot.
 *
 * @throws {Error} Naming the path when it is not a folder or has no config.json, or the hub's
 *   error.
 */
export async function resolveFolder(
  src: { folder?: string; hub?: string; revision?: string },
): Promise<string> {
  if (src.folder !== undefined) {
    const st = await Deno.stat(src.folder).catch(() => null);
    if (!st) throw new Error(`${src.folder}: no such model folder`);
    if (!st.isDirectory) throw new Error(`${src.folder}: not a folder (expected a model folder)`);
    const folder = src.folder.replace(/\/+$/, "") || "/";
    const cfg = await Deno.stat(`${folder}/config.json`).catch(() => null);
    if (!cfg?.isFile) {
      throw new Error(
        `${folder}/config.json: ${cfg ? "not a regular file" : "missing"} (a model folder ` +
          `holds config.json and safetensors)`,
      );
    }
    return folder;
  }
  let bar: ReturnType<typeof progress> | undefined, current = "";
  try {
    return await downloadModel(src.hub!, {
      revision: src.revision,
      onProgress: (file, bytes, total) => {
        if (file !== current) {
          bar?.end();
          bar = progress(`downloading ${file}`, total ?? bytes);
          current = file;
        }
        bar!.update(bytes);
      },
    });
  } finally {
    bar?.end();
  }
}

/** The folder's tokenizer, checked against the config; null when the folder has none. */
export async function optionalTokenizer(
  folder: string,
  config: ModelConfig,
): Promise<Tokenizer | null> {
  const has = await Deno.stat(`${folder}/tokenizer.json`).catch(() => null);
  if (!has) return null;
  const tok = await loadTokenizer(folder);
  checkTokenizerMatchesConfig(tok, config, `${folder}/config.json`);
  return tok;
}

/**
 * Token ids from `--ids "1,2,3"` (commas or spaces).
 *
 * @throws {UsageError} For anything but non-negative integers.
 */
export function parseIds(text: string): number[] {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  if (!parts.length || parts.some((s) => !/^\d+$/.test(s))) {
    throw new UsageError(`--ids must be non-negative integers separated by commas, got "${text}"`);
  }
  return parts.map(Number);
}
