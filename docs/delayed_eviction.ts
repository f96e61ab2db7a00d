/**
 * Writes the README's diagram of delayed eviction, `docs/delayed_eviction.svg` (8 tokens,
 * window W = 3, the decision at t = 3 marks token 2):
 *
 *   deno run --allow-read --allow-write docs/delayed_eviction.ts
 *
 * @module
 */

import { delayedEvictionSvg } from "../src/plot/diagram.ts";
import { writeTextFileAtomic } from "../src/io/atomic.ts";

const path = new URL("./delayed_eviction.svg", import.meta.url).pathname;
await writeTextFileAtomic(path, await delayedEvictionSvg());
console.log(`wrote ${path}`);
