/**
 * The page's script (bundled into ./bundle.js by `deno task browser`): runs the DMS quickstart
 * on the page's WebGPU device and prints it into `<pre id="out">`. When done, `<body>` gets
 * `data-status="done"` and the result as JSON in `<pre id="result">` (what test/browser_test.ts
 * reads); on failure `data-status="error"` and the message.
 *
 * @module
 */

import { report, runQuickstart } from "./quickstart.ts";

// The little of the DOM this page uses (declared here: a DOM lib reference would change the
// types of every module checked with this one).
declare const document: {
  getElementById(id: string): { textContent: string | null } | null;
  body: { dataset: Record<string, string | undefined> };
};

const out = document.getElementById("out")!;
const print = (line: string) => (out.textContent += `${line}\n`);
try {
  print("running the DMS quickstart on WebGPU ...");
  const r = await runQuickstart();
  for (const line of report(r)) print(line);
  document.getElementById("result")!.textContent = JSON.stringify(r);
  document.body.dataset.status = "done";
} catch (e) {
  print(`error: ${(e as Error).message}`);
  document.body.dataset.status = "error";
}
