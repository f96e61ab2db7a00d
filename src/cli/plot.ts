/**
 * `dms plot KIND [INPUT.json ...] --out FILE.svg`: the project's pictures from the JSON it
 * writes, rendered by src/plot/ and written atomically.
 *
 * - `eviction-map`: `dms generate --json --eviction-map` output (or a bare eviction map);
 * - `compression`: one or more `dms generate --json` outputs (their `trace`), e.g. a dense and
 *   a DMS run of the same prompt, or bare arrays of compression points;
 * - `diagram`: delayed eviction (no input; `--window W`, `--decisions 0,0,1,...`);
 * - `pareto`: accuracy vs KV reads or peak KV tokens from `examples/hyperscale.ts`'s results.json;
 * - a kind whose plot module has not landed says so and exits 2.
 *
 * @module
 */

import { writeTextFileAtomic } from "../io/atomic.ts";
import { type CompressionPoint, compressionSvg } from "../plot/compression.ts";
import { delayedEvictionSvg } from "../plot/diagram.ts";
import { type ParetoPoint, paretoSvg } from "../plot/pareto.ts";
import { ENTRY_STATES, type EvictionMap, evictionMapSvg } from "../plot/eviction_map.ts";
import {
  type Command,
  int,
  NotAvailableError,
  oneLine,
  parse,
  type Parsed,
  str,
  UsageError,
} from "./_command.ts";

/** Kinds a later issue will add (none pending now: every kind has landed). */
const PENDING: Readonly<Record<string, string>> = {};

const USAGE = `usage: dms plot KIND [INPUT.json ...] --out FILE.svg [--title TEXT]

Kinds:
  eviction-map INPUT   per layer and KV head, each position kept / evicted / in the window
                       (INPUT: dms generate --json --eviction-map, or an eviction map)
  compression INPUT..  live KV entries and compression over generation, one line per policy
                       (INPUTs: dms generate --json outputs, or arrays of compression points)
  diagram              delayed eviction (--window W, default 3; --decisions 0,0,0,1,...)
  pareto RESULTS       accuracy vs KV budget, one frontier line per policy (RESULTS:
                       examples/hyperscale.ts's results.json; --cost reads (default) or memory)

  --out FILE.svg       where the SVG goes (written atomically)
  --title TEXT         chart title (eviction-map, pareto)
  --cost reads|memory  pareto: x axis, KV-cache token reads or peak KV tokens per problem
  --debug              stack traces on failures`;

async function readJson(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    throw new Error(`${file}: cannot read (${oneLine(e)})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${file}: not valid JSON (${oneLine(e)})`);
  }
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** The eviction map in `json` (bare, or the `evictionMap` of generate's output), checked. */
export function evictionMapFrom(json: unknown, file: string): EvictionMap {
  const m = isObj(json) && "evictionMap" in json ? json.evictionMap : json;
  const field = isObj(json) && "evictionMap" in json ? "evictionMap." : "";
  if (!isObj(m)) {
    throw new TypeError(`${file}: expected an eviction map (dms generate --json --eviction-map)`);
  }
  for (const k of ["tokensSeen", "window", "sequence"]) {
    if (!(Number.isInteger(m[k]) && (m[k] as number) >= 0)) {
      throw new TypeError(`${file}: ${field}${k}: expected an integer >= 0, got ${m[k]}`);
    }
  }
  const T = m.tokensSeen as number, states = m.states;
  if (!Array.isArray(states) || states.length === 0) {
    throw new TypeError(`${file}: ${field}states: expected [layers][kvHeads][tokensSeen] states`);
  }
  states.forEach((heads, l) => {
    if (!Array.isArray(heads) || heads.length === 0) {
      throw new TypeError(`${file}: ${field}states[${l}]: expected a non-empty array of heads`);
    }
    heads.forEach((row, h) => {
      const at = `${file}: ${field}states[${l}][${h}]`;
      if (!Array.isArray(row) || row.length !== T) {
        throw new TypeError(`${at}: expected ${T} states (tokensSeen), got ${row?.length}`);
      }
      const bad = row.findIndex((s) => !(ENTRY_STATES as readonly unknown[]).includes(s));
      if (bad >= 0) {
        throw new TypeError(`${at}[${bad}]: expected ${ENTRY_STATES.join(", ")}, got ${row[bad]}`);
      }
    });
  });
  return m as unknown as EvictionMap;
}

/** The compression points in `json` (bare, or the `trace` of generate's output). */
export function compressionFrom(json: unknown, file: string): CompressionPoint[] {
  const pts = isObj(json) && "trace" in json ? json.trace : json;
  if (!Array.isArray(pts) || pts.length === 0) {
    throw new TypeError(`${file}: trace: expected a non-empty array of compression points`);
  }
  pts.forEach((p, i) => {
    if (!isObj(p) || typeof p.policy !== "string") {
      throw new TypeError(`${file}: trace[${i}].policy: expected a string`);
    }
    for (const k of ["tokensSeen", "liveTokens", "compressionRatio"]) {
      if (!(typeof p[k] === "number" && Number.isFinite(p[k]) && (p[k] as number) >= 0)) {
        throw new TypeError(`${file}: trace[${i}].${k}: expected a number >= 0, got ${p[k]}`);
      }
    }
  });
  return pts as CompressionPoint[];
}

/** The Pareto points of `examples/hyperscale.ts`'s results.json, for `cost` on the x axis. */
export function paretoFrom(json: unknown, file: string, cost: "reads" | "memory"): ParetoPoint[] {
  const rows = isObj(json) ? json.rows : undefined;
  if (!Array.isArray(rows) || rows.length === 0) {
    throw new TypeError(
      `${file}: rows: expected a non-empty array (examples/hyperscale.ts output)`,
    );
  }
  const [x, on] = cost === "reads"
    ? ["kv_reads", "reads_frontier"]
    : ["peak_kv_tokens", "memory_frontier"];
  return rows.map((r, i) => {
    const at = `${file}: rows[${i}]`;
    if (!isObj(r) || typeof r.policy !== "string" || r.policy === "") {
      throw new TypeError(`${at}.policy: expected a non-empty string`);
    }
    const a = r.accuracy, c = r[x];
    if (!(typeof a === "number" && a >= 0 && a <= 1)) {
      throw new TypeError(`${at}.accuracy: expected a number in [0, 1], got ${a}`);
    }
    if (!(typeof c === "number" && Number.isFinite(c) && c >= 0)) {
      throw new TypeError(`${at}.${x}: expected a number >= 0, got ${c}`);
    }
    if (typeof r[on] !== "boolean") throw new TypeError(`${at}.${on}: expected true or false`);
    return { policy: r.policy, cost: Math.max(c, 1), accuracy: a, frontier: r[on] as boolean };
  });
}

function inputs(p: Parsed, min: number, max: number): string[] {
  const files = p.positionals.slice(1);
  if (files.length < min || files.length > max) {
    throw new UsageError(
      `dms plot ${p.positionals[0]} takes ${min === max ? min : `${min} or more`} input file` +
        `${max === 1 ? "" : "s"}, got ${files.length}`,
    );
  }
  return files;
}

async function run(args: string[]): Promise<number> {
  const p = parse(args, {
    out: { type: "string" },
    title: { type: "string" },
    window: { type: "string" },
    decisions: { type: "string" },
    cost: { type: "string" },
  }, Infinity);
  const kind = p.positionals[0];
  if (kind === undefined) throw new UsageError("expected a plot kind");
  if (Object.hasOwn(PENDING, kind)) throw new NotAvailableError(`plot ${kind}: ${PENDING[kind]}`);
  const out = str(p, "out");
  const costArg = str(p, "cost") ?? "reads";
  if (costArg !== "reads" && costArg !== "memory") {
    throw new UsageError(`--cost must be reads or memory, got "${costArg}"`);
  }
  const cost: "reads" | "memory" = costArg;
  const render = (): Promise<string> => {
    if (kind === "eviction-map") {
      const [file] = inputs(p, 1, 1);
      return readJson(file).then((j) => evictionMapSvg(evictionMapFrom(j, file), str(p, "title")));
    }
    if (kind === "compression") {
      const files = inputs(p, 1, Infinity);
      return Promise.all(files.map(async (f) => compressionFrom(await readJson(f), f)))
        .then((all) => compressionSvg(all.flat()));
    }
    if (kind === "pareto") {
      const [file] = inputs(p, 1, 1);
      const by = cost === "reads"
        ? "KV-cache token reads per problem"
        : "peak KV tokens per problem";
      return readJson(file).then((j) =>
        paretoSvg(paretoFrom(j, file, cost), {
          xTitle: by,
          title: str(p, "title") ?? `${isObj(j) ? j.task : "task"}: accuracy vs ${by}`,
        })
      );
    }
    if (kind === "diagram") {
      inputs(p, 0, 0);
      const d = str(p, "decisions");
      const decisions = d?.split(/[\s,]+/).filter(Boolean).map(Number);
      if (decisions && (!decisions.length || decisions.some((x) => x !== 0 && x !== 1))) {
        throw new UsageError(`--decisions must be 0s and 1s separated by commas, got "${d}"`);
      }
      return delayedEvictionSvg({ window: int(p, "window", 3, 0), decisions });
    }
    throw new UsageError(`unknown plot kind "${kind}"`);
  };
  if (!["eviction-map", "compression", "diagram", "pareto"].includes(kind)) {
    throw new UsageError(`unknown plot kind "${kind}"`);
  }
  if (out === undefined) throw new UsageError("--out FILE.svg is required");
  if (kind === "diagram") {
    int(p, "window", 3, 0); // checked before anything is written
  }
  const svg = await render();
  await writeTextFileAtomic(out, svg);
  console.error(`wrote ${out}`);
  return 0;
}

/** `dms plot`. */
export const plotCommand: Command = {
  name: "plot",
  summary: "render SVG pictures (eviction map, compression, delayed eviction, Pareto) from JSON",
  usage: USAGE,
  run,
};
