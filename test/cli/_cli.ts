/**
 * Runs `src/cli/main.ts` in a child process, as a user would with `deno task cli` (its
 * permissions, not `-A`): with piped output (stderr is not a terminal), or under `script(1)`
 * for a pseudo-terminal.
 */

const MAIN = new URL("../../src/cli/main.ts", import.meta.url).pathname;

/** The permissions `deno task cli` grants (deno.json), so the tests run what a user runs. */
export const TASK_PERMISSIONS: string[] = (() => {
  const json = JSON.parse(Deno.readTextFileSync(new URL("../../deno.json", import.meta.url)));
  const flags = String(json.tasks?.cli ?? "").split(/\s+/).filter((f) => f.startsWith("--allow"));
  if (!flags.length) throw new Error("deno.json: tasks.cli grants no --allow-* permission");
  return flags;
})();

/** What a CLI run left behind. */
export interface CliRun {
  /** Exit code. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Options of {@linkcode cli}. */
export interface CliOptions {
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory of the child (default: the test's). */
  cwd?: string;
  /** Leave colours on: NO_COLOR unset in the child (default: NO_COLOR=1). */
  color?: boolean;
  /** Kill the child after this long (default 120 s): a hang fails the test, not the suite. */
  timeoutMs?: number;
}

const ENV = { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" };

/**
 * `deno run <the cli task's permissions> src/cli/main.ts ...args` with piped output (stderr is not a terminal); a child
 * still running after `timeoutMs` is killed (its exit code then says so).
 */
export async function cli(args: string[], opts: CliOptions = {}): Promise<CliRun> {
  const env: Record<string, string> = { ...ENV, ...opts.env };
  if (opts.color) {
    Object.assign(env, Deno.env.toObject(), opts.env);
    delete env.NO_COLOR;
  }
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...TASK_PERMISSIONS, MAIN, ...args],
    env,
    clearEnv: opts.color === true,
    cwd: opts.cwd,
    signal: AbortSignal.timeout(opts.timeoutMs ?? 120_000),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

/** Whether `script(1)` (util-linux) is there to give a child a pseudo-terminal. */
export const HAS_SCRIPT: boolean = (() => {
  try {
    return Deno.statSync("/usr/bin/script").isFile;
  } catch {
    return false;
  }
})();

const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/**
 * The CLI under `script -qec`, so stdout and stderr are one pseudo-terminal (80 columns); returns
 * the exit code and everything the terminal received. On a terminal Deno asks for a permission
 * the process lacks and waits for an answer, so the run is killed after `timeoutMs` (default
 * 30 s; the output then ends in the prompt).
 */
export async function cliOnTty(
  args: string[],
  timeoutMs = 30_000,
): Promise<{ code: number; output: string }> {
  const cmd = [Deno.execPath(), "run", ...TASK_PERMISSIONS, MAIN, ...args].map(shellQuote).join(
    " ",
  );
  const out = await new Deno.Command("/usr/bin/script", {
    args: ["-qec", `stty cols 80 2>/dev/null; ${cmd}`, "/dev/null"],
    env: { ...ENV, TERM: "xterm" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  return { code: out.code, output: new TextDecoder().decode(out.stdout) };
}

/** Terminal control sequences (CSI, OSC) and carriage returns: none may reach piped output. */
// deno-lint-ignore no-control-regex -- matching control sequences is the point
export const CONTROL: RegExp = /\x1b[[\]]|\r/;

/** Runs `jobs` with at most `n` in flight; results in order. */
export async function pool<T, R>(
  items: readonly T[],
  n: number,
  job: (t: T) => Promise<R>,
): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await job(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

/** Paths of everything under `dir` (recursive), sorted. */
export function listTree(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      out.push(`${d}/${e.name}`.slice(dir.length + 1));
      if (e.isDirectory) walk(`${d}/${e.name}`);
    }
  };
  walk(dir);
  return out.sort();
}

/** A copy of `src` (a flat model or case folder) at `dest`. */
export function copyFolder(src: string, dest: string): void {
  Deno.mkdirSync(dest, { recursive: true });
  for (const e of Deno.readDirSync(src)) {
    if (e.isFile) Deno.copyFileSync(`${src}/${e.name}`, `${dest}/${e.name}`);
  }
}

/** The committed tiny models. */
export const TEACHER: string = new URL("../../testdata/teacher", import.meta.url).pathname;
/** A DMS student of the teacher (window 8). */
export const STUDENT: string =
  new URL("../../testdata/students/w8-step1000", import.meta.url).pathname;
/** The vendored golden conformance cases. */
export const CONFORMANCE: string = new URL("../../testdata/conformance", import.meta.url).pathname;
