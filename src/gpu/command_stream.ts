/**
 * The command stream `Gpu` records into: one command encoder until the next submit, and one
 * compute pass that consecutive dispatches share (storage writes of a dispatch are visible to the
 * next one in the same pass), ended by a copy or clear (`encoder()`) or by `finish()`.
 *
 * @example Two dispatches in one pass, then one command buffer
 * ```ts ignore
 * const stream = new CommandStream(device);
 * stream.dispatch(pipelineA, groupA, -1, 4, 1, 1);
 * stream.dispatch(pipelineB, groupB, 256, 4, 1, 1); // uniform block at dynamic offset 256
 * const cb = stream.finish();
 * if (cb) device.queue.submit([cb]);
 * ```
 *
 * @module
 */

/** One command encoder and its shared compute pass (see the module doc). */
export class CommandStream {
  #device: GPUDevice;
  #encoder: GPUCommandEncoder | undefined;
  #pass: GPUComputePassEncoder | undefined;
  #passPipeline: GPUComputePipeline | undefined;
  #offset = new Uint32Array(1);

  /** @param device Device whose encoders this stream creates. */
  constructor(device: GPUDevice) {
    this.#device = device;
  }

  /** The encoder, with the shared compute pass ended (for copies, clears, passes of their own). */
  encoder(): GPUCommandEncoder {
    this.#endPass();
    return this.#raw();
  }

  /**
   * Records a dispatch into the shared compute pass (begun if none is open), setting the
   * pipeline only when it changes.
   *
   * @param dynamicOffset The uniform block's offset, −1 when the group has no dynamic binding.
   */
  dispatch(
    pipeline: GPUComputePipeline,
    group: GPUBindGroup,
    dynamicOffset: number,
    x: number,
    y: number,
    z: number,
  ): void {
    let pass = this.#pass;
    if (!pass) {
      pass = this.#pass = this.#raw().beginComputePass();
      this.#passPipeline = undefined;
    }
    if (this.#passPipeline !== pipeline) {
      pass.setPipeline(pipeline);
      this.#passPipeline = pipeline;
    }
    if (dynamicOffset >= 0) {
      // The typed-array overload: no sequence<> conversion of a fresh array per dispatch.
      this.#offset[0] = dynamicOffset;
      pass.setBindGroup(0, group, this.#offset, 0, 1);
    } else {
      pass.setBindGroup(0, group);
    }
    pass.dispatchWorkgroups(x, y, z);
  }

  /** Ends the pass and the encoder: the command buffer to submit, undefined when nothing was recorded. */
  finish(): GPUCommandBuffer | undefined {
    this.#endPass();
    const enc = this.#encoder;
    this.#encoder = undefined;
    return enc?.finish();
  }

  /** Whether anything was recorded since the last `finish()`. */
  get recording(): boolean {
    return this.#encoder !== undefined;
  }

  #raw(): GPUCommandEncoder {
    if (!this.#encoder) this.#encoder = this.#device.createCommandEncoder();
    return this.#encoder;
  }

  #endPass(): void {
    if (this.#pass) {
      this.#pass.end();
      this.#pass = undefined;
    }
  }
}
