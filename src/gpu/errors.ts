/**
 * What went wrong on the device, kept for the next sync or readback: the results of the error
 * scopes opened in debug mode (each labelled with its kernel), the first uncaptured error outside
 * debug mode (an invalid dispatch does nothing and leaves its output as it was, so the error is
 * raised at the next sync rather than lost), and the loss of the device.
 *
 * @example Raise what the device reported at the next sync
 * ```ts ignore
 * const errors = new DeviceErrors(device);
 * device.pushErrorScope("validation");
 * // ... record a dispatch ...
 * errors.track(device.popErrorScope(), "my kernel");
 * await errors.raise(); // throws "GPU error in my kernel: ..." if the scope caught one
 * ```
 *
 * @module
 */

/** Error scopes, uncaptured errors and device loss of one device (see the module doc). */
export class DeviceErrors {
  #scopes: Promise<GPUError | null>[] = [];
  #labels: string[] = [];
  #lost: string | undefined;
  #uncaptured: string | undefined;
  #device: GPUDevice;

  /** Listens for the device's loss and its uncaptured errors. */
  constructor(device: GPUDevice) {
    this.#device = device;
    device.lost.then((info) => {
      this.#lost = `GPU device lost (${info.reason || "unknown reason"}): ${info.message}`;
    });
    // Outside debug mode nothing scopes a dispatch, and an invalid one silently does nothing
    // (its output stays zero): keep the first such error and raise it at the next sync/read.
    // Bind groups carry the kernel's label, so the message names the kernel.
    device.addEventListener("uncapturederror", (ev) => {
      this.#uncaptured ??= (ev as GPUUncapturedErrorEvent).error.message;
    });
  }

  /** Records a pending error scope result under a label. */
  track(scope: Promise<GPUError | null>, label: string): void {
    this.#scopes.push(scope);
    this.#labels.push(label);
  }

  /** Throws the first error the scopes caught (naming its label), else the first uncaptured one. */
  async raise(): Promise<void> {
    const errs = await Promise.all(this.#scopes);
    const labels = this.#labels;
    this.#scopes = [];
    this.#labels = [];
    const uncaptured = this.#uncaptured;
    this.#uncaptured = undefined;
    const i = errs.findIndex((e) => e);
    if (i >= 0) throw new Error(`GPU error in ${labels[i]}: ${errs[i]!.message}`);
    if (uncaptured !== undefined) {
      throw new Error(
        `GPU error: ${uncaptured} (results since the last sync are invalid; ` +
          `DMS_DEBUG=1 scopes each dispatch)`,
      );
    }
  }

  /** Throws when the device is lost. */
  checkAlive(): void {
    if (this.#lost) throw new Error(this.#lost);
  }

  /** The loss message if the device is lost now or within `ms` milliseconds, else undefined. */
  async lostWithin(ms: number): Promise<string | undefined> {
    if (!this.#lost) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#device.lost,
        new Promise((r) => (timer = setTimeout(r, ms))),
      ]);
      clearTimeout(timer);
      await Promise.resolve(); // let the `lost` handler of the constructor run first
    }
    return this.#lost;
  }
}
