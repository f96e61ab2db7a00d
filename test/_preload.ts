/**
 * Preloaded before every test module (`deno task test` passes `--preload test/_preload.ts`):
 * when WebGPU runs on a CPU driver through OpenGL (llvmpipe GL: kernels compile slowly), prints
 * the one-line hint to install Mesa's Vulkan CPU driver, once per `deno test` process (the
 * modules share the process's environment, where the first one leaves a mark).
 *
 * @module
 */

import { probeAdapter, slowAdapterHint } from "../src/gpu/adapter.ts";

const MARK = "DMS_TEST_ADAPTER_CHECKED";
if (!Deno.env.get(MARK)) {
  Deno.env.set(MARK, "1");
  const adapter = await probeAdapter();
  const hint = adapter && slowAdapterHint(adapter);
  if (hint) console.log(hint);
}
