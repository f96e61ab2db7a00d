/**
 * Tokenizer: loads a Hugging Face `tokenizer.json` (plus `tokenizer_config.json` and
 * `generation_config.json` when present) through `@lenml/tokenizers`, a dependency-free fork of
 * transformers.js's tokenizers, and renders chat prompts with the model's own Jinja chat
 * template through `@huggingface/jinja`.
 *
 * Without a `chat_template`, {@link qwen3ChatFormat} is used: Qwen3's ChatML layout
 * (`<|im_start|>role\ncontent<|im_end|>\n`), a simplification of the real template (no tools, and
 * earlier assistant turns are not stripped of their `<think>` part).
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./tokenizer.ts";
 * const tok = await loadTokenizer("path/to/Qwen3-8B");
 * const prompt = tok.applyChatTemplate([{ role: "user", content: "2+2?" }], { enableThinking: false });
 * const ids = tok.encode(prompt);
 * console.log(tok.decode(ids) === prompt, tok.eosTokenIds); // true [151645, 151643]
 * ```
 *
 * @module
 */

import { type NSTokenizerConfig, type NSTokenizerJSON, TokenizerLoader } from "@lenml/tokenizers";
import { Template } from "@huggingface/jinja";

/** One chat turn. `reasoning_content` is read by Qwen3's template for assistant turns. */
export interface ChatMessage {
  /** Who speaks. */
  role: "system" | "user" | "assistant" | "tool";
  /** The text of the turn. */
  content: string;
  /** An assistant turn's reasoning (Qwen3 `<think>` content). */
  reasoning_content?: string;
}

/** Options of {@link Tokenizer.applyChatTemplate}. */
export interface ChatTemplateOptions {
  /** Qwen3 thinking mode (default true). False appends an empty `<think>` block to the prompt. */
  enableThinking?: boolean;
  /** Append the opening of the assistant turn (default true). */
  addGenerationPrompt?: boolean;
}

/** A loaded tokenizer. */
export interface Tokenizer {
  /** Where it was loaded from (the `tokenizer.json` path). */
  readonly file: string;
  /**
   * Token ids of a text. Special-token strings in the text (`<|im_start|>`) map to their ids.
   * `addSpecialTokens` (default false) adds the tokenizer's BOS/EOS framing (e.g. Llama 3's
   * `<|begin_of_text|>`); chat templates already contain it, so leave it off for them.
   */
  encode(text: string, options?: { addSpecialTokens?: boolean }): number[];
  /** The text of token ids (`skipSpecialTokens` drops `<|im_end|>` and the like). */
  decode(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  /** Ids that end generation: `eos_token` of tokenizer_config.json plus generation_config.json's `eos_token_id`. */
  readonly eosTokenIds: readonly number[];
  /** Number of token ids (largest id + 1, added tokens included), HF's `len(tokenizer)`. */
  readonly vocabSize: number;
  /** The chat template in use (from tokenizer_config.json), or null for the built-in format. */
  readonly chatTemplate: string | null;
  /** Renders a conversation as prompt text (encode it with {@link Tokenizer.encode}). */
  applyChatTemplate(messages: readonly ChatMessage[], options?: ChatTemplateOptions): string;
}

/**
 * Qwen3's chat layout (built-in fallback):
 * `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then, with `addGenerationPrompt`,
 * `<|im_start|>assistant\n` followed by `<think>\n\n</think>\n\n` when thinking is disabled.
 *
 * @param messages the conversation
 * @param options thinking and generation prompt (both default true)
 * @returns the prompt text
 */
export function qwen3ChatFormat(
  messages: readonly ChatMessage[],
  options: ChatTemplateOptions = {},
): string {
  let s = "";
  for (const m of messages) s += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`;
  if (options.addGenerationPrompt ?? true) {
    s += "<|im_start|>assistant\n";
    if (options.enableThinking === false) s += "<think>\n\n</think>\n\n";
  }
  return s;
}

async function readJson(path: string, optional: boolean): Promise<unknown> {
  let text: string;
  try {
    // a device such as /dev/zero would be read forever
    if (!(await Deno.stat(path)).isFile) throw new TypeError(`${path}: not a regular file`);
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (optional && e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The text of a special token given as a string or as `{ content, __type: "AddedToken" }`. */
function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.content === "string") return v.content;
  return undefined;
}

/** `chat_template` may be a string or a list of `{ name, template }` (pick "default"). */
function pickTemplate(v: unknown): string | null {
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const named = v.filter((t) => isObject(t) && typeof t.template === "string") as {
      name?: string;
      template: string;
    }[];
    return (named.find((t) => t.name === "default") ?? named[0])?.template ?? null;
  }
  return null;
}

const MODEL_TYPES = ["BPE", "WordPiece", "WordLevel", "Unigram"];

/**
 * Checks the structure `@lenml/tokenizers` relies on, so a malformed file fails here with its
 * name and the field instead of deep inside the library (or, worse, loads and encodes to
 * `null`s): `model.type`; a vocabulary of unique integer ids >= 0 (`model.vocab`: token → id,
 * or `[token, score]` pairs for Unigram); BPE merges whose parts and result are in the
 * vocabulary (as Hugging Face `tokenizers` requires); `added_tokens` with integer ids and
 * string contents.
 */
function checkStructure(json: Record<string, unknown>, file: string): void {
  const model = json.model as Record<string, unknown>;
  const bad = (field: string, what: string, got: unknown): TypeError =>
    new TypeError(
      `${file}: field "${field}": expected ${what}, got ${JSON.stringify(got)?.slice(0, 60)}`,
    );
  if (!MODEL_TYPES.includes(model.type as string)) {
    throw bad("model.type", `one of ${MODEL_TYPES.join(", ")}`, model.type);
  }
  const ids = new Map<number, string>();
  const addId = (field: string, token: string, id: unknown) => {
    if (!(Number.isInteger(id) && (id as number) >= 0 && (id as number) < 2 ** 31)) {
      throw bad(field, "a token id (an integer in 0..2^31-1)", id);
    }
    const other = ids.get(id as number);
    if (other !== undefined && other !== token) {
      throw new RangeError(
        `${file}: field "${field}": id ${id} is also the id of ${JSON.stringify(other)}`,
      );
    }
    ids.set(id as number, token);
  };
  const vocab = model.vocab;
  const tokens = new Set<string>();
  if (model.type === "Unigram") {
    if (!Array.isArray(vocab)) throw bad("model.vocab", "an array of [token, score] pairs", vocab);
    vocab.forEach((e, i) => {
      if (!(Array.isArray(e) && typeof e[0] === "string" && typeof e[1] === "number")) {
        throw bad(`model.vocab.${i}`, "a [token, score] pair", e);
      }
      addId(`model.vocab.${i}`, e[0], i);
    });
  } else {
    if (!isObject(vocab)) throw bad("model.vocab", "an object of token: id", vocab);
    for (const [t, id] of Object.entries(vocab)) {
      addId(`model.vocab.${t}`, t, id);
      tokens.add(t);
    }
  }
  if (model.type === "BPE") {
    const merges = model.merges ?? [];
    if (!Array.isArray(merges)) throw bad("model.merges", "an array of merges", merges);
    const prefix = typeof model.continuing_subword_prefix === "string"
      ? model.continuing_subword_prefix.length
      : 0;
    merges.forEach((m, i) => {
      const pair = typeof m === "string" ? m.split(" ") : m;
      if (!(Array.isArray(pair) && pair.length === 2 && pair.every((p) => typeof p === "string"))) {
        throw bad(`model.merges.${i}`, 'a merge "a b" or ["a", "b"]', m);
      }
      const merged = pair[0] + pair[1].slice(prefix);
      for (const t of [pair[0], pair[1], merged]) {
        if (!tokens.has(t)) {
          throw new RangeError(
            `${file}: field "model.merges.${i}": ${JSON.stringify(t)} is not in model.vocab`,
          );
        }
      }
    });
  }
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) throw bad("added_tokens", "an array", added);
  added.forEach((a, i) => {
    if (!isObject(a) || typeof a.content !== "string") {
      throw bad(`added_tokens.${i}`, "an object with a string content", a);
    }
    addId(`added_tokens.${i}.id`, a.content, a.id);
  });
}

/**
 * Loads a tokenizer.
 *
 * @param path a model folder (with `tokenizer.json`, optionally `tokenizer_config.json` and
 *   `generation_config.json`) or the path of a `tokenizer.json`
 * @returns the tokenizer
 * @throws SyntaxError naming the file for invalid JSON; TypeError naming the file and the field
 *   when `tokenizer.json` has no `model` section or a malformed one (type, vocabulary, merges,
 *   added tokens) or the library rejects it; RangeError naming the field for a duplicate id or a
 *   merge of tokens not in the vocabulary
 */
export async function loadTokenizer(path: string): Promise<Tokenizer> {
  const isDir = (await Deno.stat(path)).isDirectory;
  const dir = isDir
    ? path.replace(/\/$/, "")
    : path.includes("/")
    ? path.slice(0, path.lastIndexOf("/"))
    : ".";
  const file = isDir ? `${dir}/tokenizer.json` : path;
  const json = await readJson(file, false);
  if (!isObject(json) || !isObject(json.model)) {
    throw new TypeError(`${file}: expected a tokenizer.json object with a "model" section`);
  }
  const configFile = `${dir}/tokenizer_config.json`;
  const config = await readJson(configFile, true) ?? {};
  if (!isObject(config)) throw new TypeError(`${configFile}: expected a JSON object`);
  const gen = await readJson(`${dir}/generation_config.json`, true);
  checkStructure(json, file);

  let tok: ReturnType<typeof TokenizerLoader.fromPreTrained>;
  try {
    tok = TokenizerLoader.fromPreTrained({
      tokenizerJSON: { added_tokens: [], ...json } as unknown as NSTokenizerJSON.Root,
      // transformers >= 4.45 defaults clean_up_tokenization_spaces to false; so do we.
      tokenizerConfig: {
        clean_up_tokenization_spaces: false,
        ...config,
      } as unknown as NSTokenizerConfig.Root,
    });
  } catch (e) {
    // e.g. an unknown normalizer / pre_tokenizer / decoder type
    throw new TypeError(`${file}: ${(e as Error).message}`, { cause: e });
  }

  const idOf = (t: string | undefined) =>
    t === undefined ? undefined : tok.model.tokens_to_ids.get(t);
  const eos = new Set<number>();
  const eosId = idOf(tokenText(config.eos_token));
  if (eosId !== undefined) eos.add(eosId);
  if (isObject(gen)) {
    const g = gen.eos_token_id;
    for (const id of Array.isArray(g) ? g : [g]) if (Number.isInteger(id)) eos.add(id as number);
  }

  const chatTemplate = pickTemplate(config.chat_template);
  const compiled = chatTemplate === null ? null : new Template(chatTemplate);
  const specials: Record<string, string> = {};
  for (const key of ["bos_token", "eos_token", "pad_token", "unk_token"]) {
    const t = tokenText(config[key]);
    if (t !== undefined) specials[key] = t;
  }

  const vocabSize = tok.model.vocab.length;
  return {
    file,
    eosTokenIds: Object.freeze([...eos]),
    vocabSize,
    chatTemplate,
    encode(text: string, options = {}): number[] {
      const ids = tok.encode(text, { add_special_tokens: options.addSpecialTokens ?? false });
      // a piece with no token and no unk_token comes back as undefined: never pass that on
      const i = ids.findIndex((id) => !(Number.isInteger(id) && id >= 0 && id < vocabSize));
      if (i >= 0) {
        throw new RangeError(
          `${file}: ${JSON.stringify(text.slice(0, 40))} encodes to ${ids[i]} at token ${i}: ` +
            `a piece of it has no token in model.vocab and there is no unk_token`,
        );
      }
      return ids;
    },
    decode(ids: readonly number[], options = {}): string {
      if (ids.length === 0) return "";
      return tok.decode([...ids], { skip_special_tokens: options.skipSpecialTokens ?? false });
    },
    applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
      if (!compiled) return qwen3ChatFormat(messages, options);
      return compiled.render({
        messages: messages.map((m) => ({ ...m })),
        add_generation_prompt: options.addGenerationPrompt ?? true,
        enable_thinking: options.enableThinking ?? true,
        ...specials,
      });
    },
  };
}

/**
 * Checks that every token id of the tokenizer has a row in the model's embedding.
 *
 * @param tokenizer the loaded tokenizer (`vocabSize`, `file`)
 * @param config the model config (`vocabSize`, i.e. `vocab_size`)
 * @param configFile name of the config file for the message
 * @throws RangeError naming both files and sizes if the tokenizer has more ids than the model
 */
export function checkTokenizerMatchesConfig(
  tokenizer: Pick<Tokenizer, "vocabSize" | "file">,
  config: { vocabSize: number },
  configFile = "config.json",
): void {
  if (tokenizer.vocabSize > config.vocabSize) {
    throw new RangeError(
      `${tokenizer.file} has ${tokenizer.vocabSize} token ids but ${configFile} has ` +
        `vocab_size ${config.vocabSize}: tokenizer and model do not match`,
    );
  }
}
