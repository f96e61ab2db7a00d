import assert from "node:assert/strict";
import { BindGroupCache } from "../../src/gpu/pipelines.ts";
import { gpu, GPU_TEST } from "../_util.ts";

// a + b (elementwise.wgsl `add`, f32) on the GPU, read back; the CPU oracle is a loop.
const ADD = { shader: "elementwise", entry: "add", defines: { T: "f32" } };
const N = 64;

function cpuAdd(a: Float32Array, b: Float32Array): number[] {
  return Array.from(a, (x, i) => Math.fround(x + b[i]));
}

function filled(seed: number): Float32Array {
  return Float32Array.from({ length: N }, (_, i) => (i * 7 + seed * 13) % 23 - 11);
}

async function addOnGpu(a: GPUBuffer, b: GPUBuffer, out: GPUBuffer): Promise<number[]> {
  gpu.dispatch(gpu.kernel(ADD), [a, b, out], [1], { n: N, m: N, alpha: 0 });
  return Array.from(new Float32Array(await gpu.read(out, N * 4)));
}

Deno.test(
  "dispatch() after a buffer is destroyed and replaced binds the new buffer, not a stale group",
  GPU_TEST,
  async () => {
    const out = gpu.alloc(N * 4);
    let a = gpu.alloc(N * 4), b = gpu.alloc(N * 4);
    const a0 = filled(1), b0 = filled(2);
    gpu.write(a, a0);
    gpu.write(b, b0);
    assert.deepEqual(await addOnGpu(a, b, out), cpuAdd(a0, b0));
    // Destroy both inputs (release to the pool, then trim), allocate same-sized replacements
    // with other contents, and dispatch the same kernel with the same output again.
    gpu.release(a);
    gpu.release(b);
    gpu.trim();
    a = gpu.alloc(N * 4);
    b = gpu.alloc(N * 4);
    const a1 = filled(3), b1 = filled(4);
    gpu.write(a, a1);
    gpu.write(b, b1);
    assert.deepEqual(await addOnGpu(a, b, out), cpuAdd(a1, b1));
    // Swapping the two inputs is a different binding too.
    assert.deepEqual(await addOnGpu(b, a, out), cpuAdd(b1, a1));
    for (const x of [a, b, out]) gpu.release(x);
  },
);

Deno.test("dispatch() binds each byte range of one buffer as its own group", GPU_TEST, async () => {
  // Two halves of one buffer, 256-byte aligned: the key must include offset and size.
  const big = gpu.alloc(512 + N * 4), out = gpu.alloc(N * 4);
  const lo = filled(5), hi = filled(6);
  gpu.write(big, lo, 0);
  gpu.write(big, hi, 512);
  const k = gpu.kernel(ADD);
  const p = { n: N, m: N, alpha: 0 };
  const first = { buffer: big, offset: 0, size: N * 4 };
  const second = { buffer: big, offset: 512, size: N * 4 };
  gpu.dispatch(k, [first, first, out], [1], p);
  assert.deepEqual(Array.from(new Float32Array(await gpu.read(out, N * 4))), cpuAdd(lo, lo));
  gpu.dispatch(k, [first, second, out], [1], p);
  assert.deepEqual(Array.from(new Float32Array(await gpu.read(out, N * 4))), cpuAdd(lo, hi));
  gpu.dispatch(k, [second, second, out], [1], p);
  assert.deepEqual(Array.from(new Float32Array(await gpu.read(out, N * 4))), cpuAdd(hi, hi));
  gpu.release(big);
  gpu.release(out);
});

Deno.test(
  "BindGroupCache reuses a group for the same key and evicts the groups of a destroyed buffer",
  GPU_TEST,
  () => {
    const device = gpu.device;
    const cache = new BindGroupCache(device);
    const k = gpu.kernel(ADD);
    const ids = new Map<GPUBuffer, number>();
    const id = (b: GPUBuffer) => {
      if (!ids.has(b)) ids.set(b, ids.size);
      return ids.get(b)!;
    };
    const mk = () =>
      device.createBuffer({ size: N * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    const uniform = device.createBuffer({
      size: 256,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    const [a, b, c, out] = [mk(), mk(), mk(), mk()];
    const g1 = cache.get(k, [a, b, out], 0, uniform, id);
    assert.equal(cache.get(k, [a, b, out], 0, uniform, id), g1);
    const g2 = cache.get(k, [c, b, out], 0, uniform, id);
    assert.notEqual(g2, g1);
    const g3 = cache.get(k, [a, a, out], 0, uniform, id); // a twice in one group
    assert.notEqual(cache.get(k, [a, b, out], 1, uniform, id), g1); // another arena
    assert.equal(cache.size, 4);
    cache.evict(id(a));
    a.destroy();
    assert.equal(cache.size, 1); // only [c, b, out] does not bind a
    assert.equal(cache.get(k, [c, b, out], 0, uniform, id), g2);
    cache.evict(id(a)); // twice: nothing left to drop
    assert.equal(cache.size, 1);
    assert.notEqual(g3, g1);
    for (const x of [b, c, out, uniform]) x.destroy();
  },
);
