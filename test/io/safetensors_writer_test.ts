import assert from "node:assert/strict";
import type { SafetensorsDtype } from "../../src/io/safetensors_codec.ts";
import {
  encodeSafetensors,
  type TensorInput,
  writeSafetensors,
} from "../../src/io/safetensors_writer.ts";
import { withTmp } from "./_safetensors_util.ts";

Deno.test("writeSafetensors rejects bad inputs, naming the tensor", async () => {
  const cases: [Record<string, TensorInput>, new (...a: never[]) => Error, RegExp][] = [
    [
      { a: { dtype: "F32", shape: [3], data: [1, 2] } },
      RangeError,
      /"a": shape \[3\] has 3 elements, data has 2/,
    ],
    [
      { a: { dtype: "I32", shape: [1], data: [1.5] } },
      RangeError,
      /"a": element 0 = 1.5 is not a valid I32/,
    ],
    [{ a: { dtype: "U8", shape: [1], data: [256] } }, RangeError, /"a": element 0 = 256/],
    [{ a: { dtype: "BOOL", shape: [1], data: [2] } }, RangeError, /not a valid BOOL/],
    [
      { a: { dtype: "F16", shape: [2], bytes: new Uint8Array(3) } },
      RangeError,
      /needs 4 bytes, got 3/,
    ],
    [
      { a: { dtype: "F64" as SafetensorsDtype, shape: [1], data: [1] } },
      TypeError,
      /unsupported dtype "F64"/,
    ],
    [{ a: { dtype: "F32", shape: [-1], data: [] } }, RangeError, /invalid shape/],
    [
      { __metadata__: { dtype: "F32", shape: [], data: [1] } },
      TypeError,
      /not a valid tensor name/,
    ],
  ];
  await withTmp(async (dir) => {
    for (const [tensors, cls, re] of cases) {
      assert.throws(
        () => encodeSafetensors(tensors),
        (e: Error) => e instanceof cls && re.test(e.message),
      );
      await assert.rejects(writeSafetensors(`${dir}/x.safetensors`, tensors), cls);
    }
    // Nothing (not even a temp file) is left behind.
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  });
});

/**
 * `n` numbers that read as 1.5, except that reading element `at` calls `onRead` (which
 * throws or exits): a tensor whose encoding is interrupted midway through a write.
 */
function interruptedData(n: number, at: number, onRead: () => never): ArrayLike<number> {
  return new Proxy({ length: n } as ArrayLike<number>, {
    get(target, p) {
      if (p === "length") return target.length;
      if (typeof p === "string" && /^\d+$/.test(p)) return Number(p) === at ? onRead() : 1.5;
      return undefined;
    },
  });
}

const OLD = { old: { dtype: "F32", shape: [4], data: [1, 2, 3, 4] } } satisfies Record<
  string,
  TensorInput
>;

Deno.test("an interrupted writeSafetensors leaves the previous file whole and no temp file", async () => {
  await withTmp(async (dir) => {
    const path = `${dir}/t.safetensors`;
    for (const existed of [true, false]) {
      if (existed) await writeSafetensors(path, OLD);
      const before = existed ? await Deno.readFile(path) : undefined;
      let midway: { names: string[]; tmpBytes: number; final?: Uint8Array } | undefined;
      const tensors: Record<string, TensorInput> = {
        a: { dtype: "F32", shape: [64], data: new Float32Array(64).fill(7) },
        b: {
          dtype: "F32",
          shape: [8],
          data: interruptedData(8, 5, () => {
            const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
            const tmp = names.find((n) => n.startsWith("t.safetensors.tmp-"));
            midway = {
              names,
              tmpBytes: tmp ? Deno.statSync(`${dir}/${tmp}`).size : -1,
              final: existed ? Deno.readFileSync(path) : undefined,
            };
            throw new Error("interrupted");
          }),
        },
      };
      await assert.rejects(writeSafetensors(path, tensors), /interrupted/);
      // Midway: the header and tensor "a" were in a temp file in the same folder, not under `path`.
      assert.ok(midway, "the write reached tensor b");
      assert.equal(midway.names.length, existed ? 2 : 1, `midway listing ${midway.names}`);
      assert.ok(midway.tmpBytes >= 8 + 64 * 4, `temp file held ${midway.tmpBytes} bytes`);
      assert.deepEqual(midway.final, before, "the final name kept the old bytes midway");
      // After: the old file is byte-identical (or still absent) and the temp file is gone.
      assert.deepEqual(
        [...Deno.readDirSync(dir)].map((e) => e.name),
        existed ? ["t.safetensors"] : [],
      );
      if (existed) assert.deepEqual(await Deno.readFile(path), before);
      await Deno.remove(path).catch(() => {});
    }
  });
});

Deno.test("a process killed during writeSafetensors never leaves a truncated file under the final name", async () => {
  await withTmp(async (dir) => {
    const path = `${dir}/t.safetensors`;
    await writeSafetensors(path, OLD);
    const before = await Deno.readFile(path);
    // The child dies (no finally blocks, no cleanup) halfway through encoding tensor "b".
    const writer = new URL("../../src/io/safetensors_writer.ts", import.meta.url).href;
    const script = `
      import { writeSafetensors } from ${JSON.stringify(writer)};
      const b = new Proxy({ length: 1000 }, {
        get: (t, p) => p === "length" ? 1000 : p === "500" ? Deno.exit(3) : typeof p === "string" && /^\\d+$/.test(p) ? 1 : undefined,
      });
      await writeSafetensors(${JSON.stringify(path)}, {
        a: { dtype: "F32", shape: [1000], data: new Float32Array(1000) },
        b: { dtype: "F32", shape: [1000], data: b },
      });`;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 3, new TextDecoder().decode(out.stderr));
    assert.deepEqual(await Deno.readFile(path), before, "the final name holds the old file");
    const leftovers = [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
      n !== "t.safetensors"
    );
    assert.equal(leftovers.length, 1, `one abandoned temp file: ${leftovers}`);
    assert.match(leftovers[0], /^t\.safetensors\.tmp-/);
    // A later write over the same name succeeds and replaces the file whole.
    await writeSafetensors(path, { new: { dtype: "I32", shape: [2], data: [5, 6] } });
    assert.deepEqual(
      await Deno.readFile(path),
      encodeSafetensors({ new: { dtype: "I32", shape: [2], data: [5, 6] } }),
    );
  });
});
