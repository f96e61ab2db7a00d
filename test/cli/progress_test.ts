/**
 * The progress display of long commands (issue 12 item 3): on a terminal `retrofit` and `eval`
 * draw a bar on stderr (`\r<label> [###...] done/total ...\x1b[K`), finished at 100% and cleared
 * once before the report; with stderr piped they print no bar and no control sequence at all,
 * colours allowed (NO_COLOR unset) or not. The terminal is a pseudo-terminal from `script(1)`,
 * and the commands run with the permissions of `deno task cli`: on a terminal, an API that
 * needs a permission the task does not grant makes Deno prompt and wait, and the test fails.
 */

import assert from "node:assert/strict";
import { progressLine } from "../../src/cli/_progress.ts";
import { cli, cliOnTty, CONTROL, HAS_SCRIPT, pool, STUDENT, TEACHER } from "./_cli.ts";

Deno.test("progressLine: the bar's fill, counts, percentage, rate and note", () => {
  assert.equal(
    progressLine("eval", 7, 10, 2.5, "accuracy 1.00"),
    `eval [${"#".repeat(20)}${".".repeat(8)}] 7/10 70%  2.5/s  accuracy 1.00`,
  );
  assert.equal(progressLine("x", 0, 0, 0), `x [${".".repeat(28)}] 0/0 0%  0.0/s`);
  assert.equal(progressLine("x", 12, 10, 1), `x [${"#".repeat(28)}] 12/10 100%  1.0/s`);
});

const EVAL = ["eval", STUDENT, "--length", "48", "--samples", "4", "--policy", "dms"];
const retrofit = (out: string) => [
  "retrofit",
  TEACHER,
  "--out",
  out,
  "--task",
  "kv",
  "--length",
  "32",
  "--steps",
  "3",
  "--batch",
  "2",
  "--window",
  "4",
];

Deno.test("piped output: no progress bar and no control sequence from eval and retrofit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dms-cli-progress-" });
  try {
    const runs = await pool(
      [EVAL, retrofit(`${dir}/ck`)],
      2,
      (a) => cli(a, { color: true }),
    );
    for (const r of runs) {
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, "", "quiet on a piped stderr");
      assert.ok(!CONTROL.test(r.stdout), JSON.stringify(r.stdout));
    }
    assert.match(runs[0].stdout, /^accuracy [\d.]+ {2}compression/m);
    assert.match(runs[1].stdout, /^step 3\/3: /);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "on a terminal: eval and retrofit draw a bar to 100% and clear it once before the report",
  ignore: !HAS_SCRIPT,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "dms-cli-progress-" });
    try {
      const runs = await pool([EVAL, retrofit(`${dir}/ck`)], 2, (a) => cliOnTty(a));
      const expected: [string, number, string][] = [
        ["eval dms", 4, `${STUDENT}: kv(`],
        ["retrofit", 3, "step 3/3:"],
      ];
      for (const [i, [label, total, report]] of expected.entries()) {
        const { code, output } = runs[i];
        // a permission the cli task does not grant becomes a prompt that waits for ever
        assert.ok(!output.includes("Deno requests"), `${label}: a permission prompt: ${output}`);
        assert.equal(code, 0, output);
        // deno-lint-ignore no-control-regex -- the bar's own control sequences
        const bars = [...output.matchAll(/\r([^\r\n]*?)\x1b\[K/g)].map((m) => m[1]);
        const drawn = bars.filter((b) => b.startsWith(`${label} [`));
        assert.ok(drawn.length >= 1, `${label}: no bar in ${JSON.stringify(output)}`);
        assert.ok(
          drawn.at(-1)!.startsWith(`${label} [${"#".repeat(28)}] ${total}/${total} 100%`),
          drawn.at(-1),
        );
        const clears = bars.filter((b) => b === "");
        assert.equal(clears.length, 1, `${label}: cleared ${clears.length} times`);
        assert.ok(output.lastIndexOf("\r\x1b[K") < output.indexOf(report), `${label}: order`);
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
