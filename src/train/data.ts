/**
 * Training data for retrofitting (SPEC §6 "Data"): batches of token ids `ids:[B, S]`
 * (row-major Int32Array), deterministic by seed and resumable.
 *
 * - {@linkcode packDocuments}: documents (token lists) packed into sequences of exactly
 *   `seqLen` tokens with no cross-document mask (SPEC §3, §6): each sequence starts at a
 *   document start and takes whole documents, separated by EOS when given, until it is full;
 *   the overflow of the last document is dropped (the next sequence starts with the next
 *   document); a final sequence that cannot be filled is dropped.
 * - {@linkcode sequenceSource}: batches from a fixed list of sequences, every epoch in a new
 *   order drawn from `(seed, epoch)`.
 * - {@linkcode generatorSource}: batches from a function `(index, rng) → tokens`, sequence
 *   `index` drawn from its own RNG seeded by `(seed, index)` (synthetic tasks plug in here).
 * - {@linkcode textFileSource}: a text file split into documents, tokenized, shuffled by
 *   seed (SPEC §6: shuffle, then pack), packed, then served as a {@linkcode sequenceSource}.
 *
 * A {@linkcode BatchSource}'s `state()` is a small JSON value; `restore(state)` on a source
 * built the same way continues exactly where the saved one stopped (trainer_state.json keeps it).
 *
 * @example Pack, serve two batches, resume
 * ```ts
 * import { packDocuments, sequenceSource } from "./data.ts";
 * const seqs = packDocuments([[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]], { seqLen: 4, eosId: 0 });
 * // [[1, 2, 3, 0], [4, 5, 0, 6]]: 7, 8, 9 overflow (dropped); [10, 0] cannot be filled
 * const src = sequenceSource(seqs, { batch: 1, seed: 42 });
 * src.next();
 * const saved = src.state();
 * const a = src.next();
 * const again = sequenceSource(seqs, { batch: 1, seed: 42 });
 * again.restore(saved);
 * console.log(again.next().ids.join() === a.ids.join()); // true
 * ```
 *
 * @module
 */

/** One batch: `ids:[batch, seqLen]` row-major. */
export interface Batch {
  /** Token ids, `batch · seqLen` values, row-major `[B, S]`. */
  ids: Int32Array;
  /** Rows B. */
  batch: number;
  /** Tokens per row S. */
  seqLen: number;
}

/** Where a source stands (JSON-serialisable; see {@linkcode BatchSource.state}). */
export type BatchSourceState = Record<string, number | string>;

/** A deterministic, resumable stream of batches. */
export interface BatchSource {
  /** Rows per batch. */
  readonly batch: number;
  /** Tokens per row. */
  readonly seqLen: number;
  /** End-of-sequence ids of the data (their positions carry no distillation term, SPEC §6). */
  readonly eosTokenIds: readonly number[];
  /** The next batch. */
  next(): Batch;
  /** The position in the stream (JSON); `restore` of it continues from here. */
  state(): BatchSourceState;
  /**
   * Continues from a {@linkcode BatchSource.state} of a source built the same way.
   *
   * @throws {TypeError} When the state belongs to another kind of source or seed.
   */
  restore(state: BatchSourceState): void;
}

/** Options of {@linkcode packDocuments}. */
export interface PackOptions {
  /** Tokens per sequence (>= 1). */
  seqLen: number;
  /** Separator appended after every document (a tokenizer's EOS), or none. */
  eosId?: number;
}

function posInt(v: number, what: string): void {
  if (!Number.isInteger(v) || v < 1) {
    throw new RangeError(`${what} must be an integer >= 1, got ${v}`);
  }
}

/**
 * Packs documents into sequences of exactly `seqLen` tokens (see the module doc).
 *
 * @param docs Token lists, in packing order.
 * @param opts `{ seqLen, eosId? }`.
 * @returns The full sequences, each `[seqLen]`.
 */
export function packDocuments(
  docs: Iterable<ArrayLike<number>>,
  opts: PackOptions,
): Int32Array[] {
  posInt(opts.seqLen, "packDocuments: seqLen");
  const S = opts.seqLen, out: Int32Array[] = [];
  let cur = new Int32Array(S), fill = 0;
  for (const doc of docs) {
    const n = doc.length + (opts.eosId === undefined ? 0 : 1);
    if (n === 0) continue;
    for (let i = 0; i < n && fill < S; i++) {
      cur[fill++] = i < doc.length ? doc[i] : opts.eosId!;
    }
    if (fill === S) { // the document's overflow (if any) is dropped
      out.push(cur);
      cur = new Int32Array(S);
      fill = 0;
    }
  }
  return out;
}

/** mulberry32 seeded by a 32-bit value: uniform floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit mix of two integers (murmur3 finaliser of `a·φ ^ b`). */
export function mixSeed(a: number, b: number): number {
  let h = (Math.imul(a >>> 0, 0x9e3779b9) ^ (b >>> 0)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Fisher–Yates permutation of `0..n-1` from `seed`. */
export function shuffledIndices(n: number, seed: number): Uint32Array {
  const p = new Uint32Array(n), rnd = seededRandom(seed);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** Options of {@linkcode sequenceSource}. */
export interface SequenceSourceOptions {
  /** Rows per batch (>= 1). */
  batch: number;
  /** Order seed (u32): epoch e serves the sequences in the order drawn from `(seed, e)`. */
  seed: number;
  /** EOS ids of the data (default none). */
  eosTokenIds?: readonly number[];
  /** Name used in errors (e.g. the file the sequences came from). */
  label?: string;
}

/**
 * Batches from a fixed list of equal-length sequences, reshuffled every epoch; a batch that
 * crosses an epoch end continues with the next epoch's order.
 *
 * @param sequences At least one sequence, all of the same length.
 * @param opts `{ batch, seed, eosTokenIds?, label? }`.
 * @throws {RangeError} For no sequences or unequal lengths (naming `label`).
 */
export function sequenceSource(
  sequences: readonly ArrayLike<number>[],
  opts: SequenceSourceOptions,
): BatchSource {
  const label = opts.label ?? "sequenceSource";
  posInt(opts.batch, `${label}: batch`);
  if (!sequences.length) throw new RangeError(`${label}: no sequences`);
  const S = sequences[0].length;
  posInt(S, `${label}: sequence length`);
  sequences.forEach((s, i) => {
    if (s.length !== S) {
      throw new RangeError(`${label}: sequence ${i} has ${s.length} tokens, sequence 0 has ${S}`);
    }
  });
  const B = opts.batch, seed = opts.seed >>> 0, N = sequences.length;
  let epoch = 0, pos = 0, order = shuffledIndices(N, mixSeed(seed, 0));
  const kind = `sequences:${N}x${S}`;
  return {
    batch: B,
    seqLen: S,
    eosTokenIds: [...(opts.eosTokenIds ?? [])],
    next(): Batch {
      const ids = new Int32Array(B * S);
      for (let b = 0; b < B; b++) {
        if (pos === N) {
          epoch++;
          pos = 0;
          order = shuffledIndices(N, mixSeed(seed, epoch));
        }
        ids.set(Array.from(sequences[order[pos++]]), b * S);
      }
      return { ids, batch: B, seqLen: S };
    },
    state: () => ({ kind, seed, epoch, pos }),
    restore(st: BatchSourceState): void {
      if (st.kind !== kind || st.seed !== seed) {
        throw new TypeError(
          `${label}: cannot restore state of ${st.kind} (seed ${st.seed}) into ${kind} (seed ${seed})`,
        );
      }
      const e = Number(st.epoch), p = Number(st.pos);
      if (!(Number.isSafeInteger(e) && e >= 0 && Number.isInteger(p) && p >= 0 && p <= N)) {
        throw new RangeError(
          `${label}: cannot restore epoch ${st.epoch}, pos ${st.pos}: expected an epoch >= 0 ` +
            `and a position in 0..${N}`,
        );
      }
      epoch = e;
      pos = p;
      order = shuffledIndices(N, mixSeed(seed, epoch));
    },
  };
}

/** Options of {@linkcode generatorSource}. */
export interface GeneratorSourceOptions {
  /** Rows per batch (>= 1). */
  batch: number;
  /** Tokens per row (>= 1); each generated sequence must have exactly this many. */
  seqLen: number;
  /** Run seed (u32); sequence i gets an RNG seeded by `(seed, i)`. */
  seed: number;
  /** EOS ids of the data (default none). */
  eosTokenIds?: readonly number[];
}

/**
 * Batches from a generator: row `b` of batch `k` is `generate(k·batch + b, rng)` with `rng` a
 * uniform [0, 1) stream seeded by `(seed, index)`, so any sequence is reproducible on its own
 * and the state is one counter.
 *
 * @param generate `(index, rng) → seqLen token ids`.
 * @param opts `{ batch, seqLen, seed, eosTokenIds? }`.
 * @throws {RangeError} (from `next`) When a generated sequence has the wrong length.
 */
export function generatorSource(
  generate: (index: number, rng: () => number) => ArrayLike<number>,
  opts: GeneratorSourceOptions,
): BatchSource {
  posInt(opts.batch, "generatorSource: batch");
  posInt(opts.seqLen, "generatorSource: seqLen");
  const B = opts.batch, S = opts.seqLen, seed = opts.seed >>> 0;
  let index = 0;
  return {
    batch: B,
    seqLen: S,
    eosTokenIds: [...(opts.eosTokenIds ?? [])],
    next(): Batch {
      const ids = new Int32Array(B * S);
      for (let b = 0; b < B; b++, index++) {
        const seq = generate(index, seededRandom(mixSeed(seed, index)));
        if (seq.length !== S) {
          throw new RangeError(
            `generatorSource: sequence ${index} has ${seq.length} tokens, expected seqLen ${S}`,
          );
        }
        ids.set(Array.from(seq), b * S);
      }
      return { ids, batch: B, seqLen: S };
    },
    state: () => ({ kind: "generator", seed, index }),
    restore(st: BatchSourceState): void {
      if (st.kind !== "generator" || st.seed !== seed) {
        throw new TypeError(
          `generatorSource: cannot restore state of ${st.kind} (seed ${st.seed}) into generator (seed ${seed})`,
        );
      }
      const i = Number(st.index);
      if (!(Number.isSafeInteger(i) && i >= 0)) {
        throw new RangeError(`generatorSource: cannot restore index ${st.index}: expected >= 0`);
      }
      index = i;
    },
  };
}

/** What {@linkcode textFileSource} needs of a tokenizer (`loadTokenizer`'s result fits). */
export interface TextTokenizer {
  /** Token ids of a text. */
  encode(text: string): number[];
  /** EOS ids; the first one separates documents. */
  readonly eosTokenIds: readonly number[];
}

/** Options of {@linkcode textFileSource}. */
export interface TextFileSourceOptions {
  /** Rows per batch (>= 1). */
  batch: number;
  /** Tokens per packed row (>= 1). */
  seqLen: number;
  /** Seed (u32) of the document shuffle and of the epoch orders (SPEC §6 uses 42). */
  seed: number;
  /**
   * How the file splits into documents: `"blank-lines"` (default; paragraphs separated by an
   * empty line), `"lines"` (one per line), `"jsonl"` (one JSON object per line, its `text`).
   */
  documents?: "blank-lines" | "lines" | "jsonl";
}

/**
 * Offset of the first byte of the first ill-formed UTF-8 sequence (Unicode Table 3-7, as the
 * fatal `TextDecoder` applies it), or the length when the bytes are well-formed.
 */
function firstInvalidUtf8(b: Uint8Array): number {
  for (let i = 0; i < b.length;) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    // continuation bytes after the lead, and the range of the first one (the rest 80..BF)
    const n = c >= 0xc2 && c <= 0xdf
      ? 1
      : c >= 0xe0 && c <= 0xef
      ? 2
      : c >= 0xf0 && c <= 0xf4
      ? 3
      : 0;
    const lo = c === 0xe0 ? 0xa0 : c === 0xf0 ? 0x90 : 0x80;
    const hi = c === 0xed ? 0x9f : c === 0xf4 ? 0x8f : 0xbf;
    if (n === 0 || !(b[i + 1] >= lo && b[i + 1] <= hi)) return i;
    for (let k = 2; k <= n; k++) if (!(b[i + k] >= 0x80 && b[i + k] <= 0xbf)) return i;
    i += n + 1;
  }
  return b.length;
}

/**
 * Packed sequences from a text file (SPEC §6): split into documents, each tokenized and
 * followed by the tokenizer's first EOS id (when it has one), documents shuffled by `seed`,
 * packed to exactly `seqLen` (see {@linkcode packDocuments}), served by epoch.
 *
 * @param path The text file.
 * @param tokenizer E.g. `await loadTokenizer(folder)`.
 * @param opts `{ batch, seqLen, seed, documents? }`.
 * @throws {Error} Naming the file when it cannot be read, is not UTF-8 (TypeError with the
 *   offset of the first invalid byte), a JSONL line is invalid, or it holds fewer tokens than
 *   one sequence.
 */
export async function textFileSource(
  path: string,
  tokenizer: TextTokenizer,
  opts: TextFileSourceOptions,
): Promise<BatchSource> {
  posInt(opts.seqLen, `${path}: seqLen`);
  let bytes: Uint8Array;
  try {
    // a device such as /dev/zero would be read forever
    if (!(await Deno.stat(path)).isFile) throw new Error("not a regular file");
    bytes = await Deno.readFile(path);
  } catch (e) {
    throw new Error(`${path}: cannot read the training text (${(e as Error).message})`);
  }
  let text: string;
  try {
    // fatal: a binary or mis-encoded file is refused, not silently trained on as U+FFFD
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new TypeError(
      `${path}: not UTF-8 text (first invalid byte at offset ${firstInvalidUtf8(bytes)})`,
    );
  }
  const mode = opts.documents ?? "blank-lines";
  let docs: string[];
  if (mode === "jsonl") {
    docs = text.split("\n").flatMap((line, i) => {
      if (!line.trim()) return [];
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch (e) {
        throw new SyntaxError(`${path}:${i + 1}: invalid JSON (${(e as Error).message})`);
      }
      const t = (row as { text?: unknown })?.text;
      if (typeof t !== "string") {
        throw new TypeError(`${path}:${i + 1}: expected an object with a string "text" field`);
      }
      return [t];
    });
  } else {
    docs = text.split(mode === "lines" ? /\r?\n/ : /\r?\n[ \t]*\r?\n/)
      .map((d) => d.trimEnd()) // the file's final newline is not part of a document
      .filter((d) => d);
  }
  const order = shuffledIndices(docs.length, mixSeed(opts.seed >>> 0, 0x70ac4));
  const eosId = tokenizer.eosTokenIds[0];
  const tokens = function* () {
    for (const i of order) yield tokenizer.encode(docs[i]);
  };
  const seqs = packDocuments(tokens(), { seqLen: opts.seqLen, eosId });
  if (!seqs.length) {
    throw new RangeError(
      `${path}: ${docs.length} documents give fewer than seqLen = ${opts.seqLen} tokens`,
    );
  }
  return sequenceSource(seqs, {
    batch: opts.batch,
    seed: opts.seed,
    eosTokenIds: tokenizer.eosTokenIds,
    label: path,
  });
}
