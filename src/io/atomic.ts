/**
 * Atomic text writes: every results file, plot and config the project writes goes through
 * {@linkcode writeTextFileAtomic}, so a reader never sees a half-written file and an interrupted
 * run leaves the previous version in place (issue 13, "nothing lost").
 *
 * @example
 * ```ts ignore
 * import { writeTextFileAtomic } from "./atomic.ts";
 * await writeTextFileAtomic("out/results.csv", "policy,accuracy\ndense,1\n");
 * ```
 *
 * @module
 */

/**
 * Writes `text` to `path` atomically: a temporary file beside it (same folder, so the rename
 * cannot cross file systems), flushed to disk, then renamed over `path`. Creates the folder.
 *
 * @throws The file system's error, prefixed with the path; the temporary file is removed.
 */
export async function writeTextFileAtomic(path: string, text: string): Promise<void> {
  const slash = path.lastIndexOf("/");
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    if (slash > 0) await Deno.mkdir(path.slice(0, slash), { recursive: true });
    const file = await Deno.open(tmp, { write: true, createNew: true });
    try {
      const bytes = new TextEncoder().encode(text);
      let off = 0;
      while (off < bytes.length) off += await file.write(bytes.subarray(off));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`writing ${path} failed: ${(e as Error).message}`, { cause: e });
  }
}
