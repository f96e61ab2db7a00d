/**
 * A progress bar on stderr for long work (downloads, training steps, evaluation batches): drawn
 * only when stderr is a terminal (nothing at all in pipes, logs and tests), redrawn at most ten
 * times a second, cleared at the end (`end()` clears only a drawn bar, so calling it twice is
 * harmless). `[#######.......]  70/100  70%  12.3/s  <note>`.
 *
 * @module
 */

const WIDTH = 28;
const enc = new TextEncoder();

/** A bar over `total` units. */
export interface Progress {
  /** Sets the units done and an optional note (loss, file name, ...). */
  update(done: number, note?: string): void;
  /** Clears the bar's line. */
  end(): void;
}

/** The bar's text for `done` of `total` units at `rate` units per second. */
export function progressLine(
  label: string,
  done: number,
  total: number,
  rate: number,
  note = "",
): string {
  const f = total > 0 ? Math.min(1, Math.max(0, done / total)) : 0;
  const fill = Math.round(f * WIDTH);
  return `${label} [${"#".repeat(fill)}${".".repeat(WIDTH - fill)}] ${done}/${total} ` +
    `${(100 * f).toFixed(0)}%  ${rate.toFixed(1)}/s${note ? `  ${note}` : ""}`;
}

/** A progress bar labelled `label`, or a silent one when stderr is not a terminal. */
export function progress(label: string, total: number): Progress {
  let tty = false;
  try {
    tty = Deno.stderr.isTerminal();
  } catch { /* no terminal */ }
  if (!tty) return { update() {}, end() {} };
  const t0 = performance.now();
  let last = 0, drawn = false;
  return {
    update(done, note) {
      const now = performance.now();
      if (now - last < 100 && done < total) return;
      last = now;
      const rate = done / Math.max((now - t0) / 1000, 1e-9);
      const cols = (() => {
        try {
          return Deno.consoleSize().columns;
        } catch {
          return 100;
        }
      })();
      const line = progressLine(label, done, total, rate, note).slice(0, cols - 1);
      Deno.stderr.writeSync(enc.encode(`\r${line}\x1b[K`));
      drawn = true;
    },
    end() {
      if (drawn) Deno.stderr.writeSync(enc.encode("\r\x1b[K"));
      drawn = false;
    },
  };
}
