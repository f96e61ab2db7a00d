import assert from "node:assert/strict";
import * as facade from "../../src/io/safetensors.ts";
import * as checkpoint from "../../src/io/checkpoint.ts";
import * as codec from "../../src/io/safetensors_codec.ts";
import * as reader from "../../src/io/safetensors_reader.ts";
import * as writer from "../../src/io/safetensors_writer.ts";

// The tests of each piece live beside it: safetensors_codec_test.ts, safetensors_reader_test.ts,
// checkpoint_test.ts, safetensors_writer_test.ts. This file checks the one-import surface.

/** Every value safetensors.ts exported before it was split into modules (types are checked by tsc). */
const VALUES = [
  "Checkpoint",
  "DEFAULT_CHUNK_BYTES",
  "INDEX_FILE",
  "MAX_HEADER_BYTES",
  "SAFETENSORS_DTYPES",
  "SINGLE_FILE",
  "SafetensorsFile",
  "decodeSafetensors",
  "dtypeBytes",
  "encodeSafetensors",
  "f32ToBf16Bits",
  "isSafeRelativePath",
  "openCheckpoint",
  "openSafetensors",
  "writeSafetensors",
];

Deno.test("safetensors.ts re-exports every value it exported before the split, and nothing else", () => {
  assert.deepEqual(Object.keys(facade).sort(), [...VALUES].sort());
  const pieces: Record<string, unknown>[] = [codec, reader, checkpoint, writer];
  for (const name of VALUES) {
    const homes = pieces.filter((m) => name in m);
    assert.equal(homes.length, 1, `${name} has exactly one home module`);
    assert.equal((facade as Record<string, unknown>)[name], homes[0][name], name);
  }
});

Deno.test("safetensors.ts still exports the types importers use", async () => {
  const path = await Deno.makeTempFile({ suffix: ".safetensors" });
  try {
    const input: facade.TensorInput = { dtype: "BF16", shape: [3, 2], data: [1, 2, 3, 4, 5, 6] };
    await facade.writeSafetensors(path, { w: input });
    using file: facade.TensorReader & Disposable = await facade.openCheckpoint(path);
    const range: facade.RowRange = { rowStart: 1, rowEnd: 3 };
    const rows: facade.TensorData = await file.read("w", range);
    const raw: facade.RawTensor = await file.readRaw("w", range);
    const info: facade.TensorInfo | undefined = file.tensors.get("w");
    const dtype: facade.SafetensorsDtype | undefined = info?.dtype;
    const options: facade.OpenOptions = { chunkBytes: 8 };
    using small = await facade.openSafetensors(path, options);
    assert.deepEqual([rows.shape, Array.from(rows.data)], [[2, 2], [3, 4, 5, 6]]);
    assert.equal(raw.bytes.length, 8);
    assert.equal(dtype, "BF16");
    assert.deepEqual(Array.from((await small.read("w")).data), [1, 2, 3, 4, 5, 6]);
  } finally {
    await Deno.remove(path);
  }
});
