/**
 * Step traces (src/gpu/step_trace.ts, `Gpu.beginTrace` / `endTrace` / `replay`): a replay
 * encodes the traced dispatches again with the changing uniform words patched, which the output
 * of a kernel whose uniform says how many elements to write shows exactly; traces that differ in
 * more than uniform words, or saw a copy, are refused.
 */
import assert from "node:assert/strict";
import { sameDelta, traceDelta } from "../../src/gpu/step_trace.ts";
import { gpu, GPU_TEST } from "../_util.ts";

const add = () =>
  gpu.kernel({ shader: "elementwise", entry: "add", defines: { T: "f32" }, constants: { WG: 64 } });

/** out[i] = a[i] + b[i] for i < n: writes into a zeroed `out`, traced; returns the trace. */
function traced(a: GPUBuffer, b: GPUBuffer, out: GPUBuffer, n: number) {
  gpu.flush();
  gpu.beginTrace();
  gpu.dispatch(add(), [a, b, out], [1], { n, m: 64, alpha: 0 });
  return gpu.endTrace();
}

Deno.test({
  name: "a replay patches the words that change per step by delta · k and reuses the rest",
  ...GPU_TEST,
  fn: async () => {
    const a = gpu.alloc(256), b = gpu.alloc(256), out = gpu.alloc(256);
    try {
      gpu.write(a, Float32Array.from({ length: 64 }, (_, i) => i));
      gpu.write(b, new Float32Array(64).fill(100));
      const t3 = traced(a, b, out, 3), t5 = traced(a, b, out, 5), t7 = traced(a, b, out, 7);
      const d = traceDelta(t3, t5)!;
      assert.ok(d, "two traces of one kernel over the same buffers differ in a word only");
      assert.deepEqual([...d.dispatch, ...d.word, ...d.delta], [0, 0, 2]); // n: word 0, +2
      assert.ok(sameDelta(d, traceDelta(t5, t7)!), "n grows by 2 a step: the deltas agree");
      assert.ok(!sameDelta(d, traceDelta(t3, t7)!), "a two-step delta is another one");
      for (const [times, n] of [[0, 7], [2, 11], [5, 17]]) {
        gpu.encoder().clearBuffer(out);
        gpu.flush();
        assert.ok(gpu.canReplay(t7));
        gpu.replay(t7, d, times);
        const y = new Float32Array(await gpu.read(out, 256));
        const want = Array.from({ length: 64 }, (_, i) => (i < n ? i + 100 : 0));
        assert.deepEqual([...y], want, `replay ${times} steps after n = 7 writes ${n} elements`);
      }
    } finally {
      for (const x of [a, b, out]) gpu.release(x);
    }
  },
});

Deno.test({
  name: "traces that differ in a buffer or a grid have no delta; a copy, a write, a destroyed " +
    "buffer, a buffer handed out by the pool or another uniform slot make a trace unreplayable",
  ...GPU_TEST,
  fn: async () => {
    const a = gpu.alloc(256), b = gpu.alloc(256), out = gpu.alloc(256), other = gpu.alloc(256);
    try {
      const t = traced(a, b, out, 4);
      assert.ok(t.clean);
      assert.equal(traceDelta(t, traced(a, b, other, 4)), undefined, "another output buffer");
      gpu.flush();
      gpu.beginTrace();
      gpu.dispatch(add(), [a, b, out], [2], { n: 4, m: 64, alpha: 0 });
      assert.equal(traceDelta(t, gpu.endTrace()), undefined, "another grid");

      gpu.flush();
      gpu.beginTrace();
      gpu.dispatch(add(), [a, b, out], [1], { n: 4, m: 64, alpha: 0 });
      gpu.encoder().clearBuffer(other);
      const copied = gpu.endTrace();
      assert.ok(!copied.clean && !gpu.canReplay(copied), "a clear in the trace");
      assert.throws(() => gpu.replay(copied), /not clean/);

      gpu.beginTrace();
      gpu.write(other, new Float32Array(4));
      assert.ok(!gpu.endTrace().clean, "a write in the trace");

      gpu.flush();
      gpu.dispatch(add(), [a, b, out], [1], { n: 4, m: 64, alpha: 0 }); // the batch's slot 0
      assert.ok(!gpu.canReplay(t), "the uniform batch is past the trace's first slot");
      assert.throws(() => gpu.replay(t), /slot/);
      gpu.flush();
      assert.ok(gpu.canReplay(t));
      gpu.release(other);
      gpu.trim(); // destroys the pooled buffers, `other` among them
      assert.ok(!gpu.canReplay(t), "a pooled buffer was destroyed since the trace");
      assert.throws(() => gpu.replay(t), /destroyed/);

      const u = traced(a, b, out, 4);
      gpu.flush();
      assert.ok(gpu.canReplay(u));
      gpu.release(gpu.alloc(64)); // the pool hands a buffer out (and takes it back)
      assert.ok(!gpu.canReplay(u), "a pooled buffer was handed out since the trace ended");
      assert.throws(() => gpu.replay(u), /handed out/);
    } finally {
      for (const x of [a, b, out]) gpu.release(x);
    }
    await gpu.sync();
  },
});
