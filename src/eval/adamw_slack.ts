/**
 * How much of an `adamw1.*` / `adamw2.*` difference a `train_step` case's
 * gradient difference explains. Where |g| is near AdamW's `eps`, the update
 * `lr·g/(|g| + eps)` is extremely sensitive to g (∂/∂g = lr·eps/(|g|+eps)², up to
 * `lr/eps` = 10⁶ for lr 0.01, eps 1e−8), so two float32 gradients that agree to
 * 1e−9 (far inside the `grad.*` tolerance) can move a weight by 1e−4: no
 * independent implementation can meet the AdamW tolerance there. The runner
 * therefore compares AdamW weights after removing, element by element, the part
 * that the backend's own gradient difference explains:
 *
 * `slack_k = |u(ĝ_actual) − u(ĝ_expected)|·(k = 1 ? 1 : 1 + c)`, with
 * `u(g) = lr·g/(|g| + eps)` (the update of the first AND second step when both use the
 * same clipped gradient: m̂ = g and v̂ = g² at both), `c = 1 − lr·weight_decay`, and ĝ
 * the gradient times its clip coefficient `min(1, max_norm/(norm + 1e−6))`.
 *
 * The remaining error must then be within the case's `{atol, rtol}`. A backend whose
 * optimizer is wrong (bias correction, decay, moments) still fails: the slack is 0
 * wherever the gradients agree exactly and tiny wherever |g| ≫ eps.
 *
 * @module
 */

import type { BackendOutputs, CaseJson } from "./case.ts";
import type { CaseTensor } from "./compare.ts";

/** `case.json` → `adamw` of a `train_step` case. */
interface AdamwJson {
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  clip_grad_norm: number;
}

function adamwOf(json: CaseJson): AdamwJson | null {
  const a = json.adamw as Partial<AdamwJson> | undefined;
  if (!a || typeof a !== "object") return null;
  const ok = ["lr", "eps", "weight_decay", "clip_grad_norm"].every((k) =>
    typeof (a as Record<string, unknown>)[k] === "number"
  );
  return ok ? a as AdamwJson : null;
}

function clipCoef(grads: Iterable<ArrayLike<number>>, maxNorm: number): number {
  let ss = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) ss += g[i] * g[i];
  return Math.min(1, maxNorm / (Math.sqrt(ss) + 1e-6));
}

/**
 * The actual AdamW tensor with the gradient-explained part of its error removed:
 * `a' = e + sign(a − e)·max(0, |a − e| − slack)` (so `a'` is compared with the case's
 * tolerance), or `actual` unchanged when the case has no `adamw` settings, the tensor
 * is not an `adamw1.` / `adamw2.` tensor, or a gradient is missing.
 *
 * @returns the tensor to compare and the largest slack used
 */
export function removeGradientExplainedError(
  name: string,
  json: CaseJson,
  expected: ReadonlyMap<string, CaseTensor>,
  outputs: BackendOutputs,
  actual: CaseTensor,
): { actual: CaseTensor; maxSlack: number } {
  const m = /^adamw([12])\.(.+)$/.exec(name);
  const opt = adamwOf(json);
  const exp = expected.get(name);
  if (!m || !opt || !exp) return { actual, maxSlack: 0 };
  const weight = m[2], k = Number(m[1]);
  const gA = outputs[`grad.${weight}`], gE = expected.get(`grad.${weight}`);
  if (!gA || !gE || gA.data.length !== actual.data.length || gE.data.length !== gA.data.length) {
    return { actual, maxSlack: 0 };
  }
  const gradsOf = (src: (n: string) => CaseTensor | undefined): ArrayLike<number>[] =>
    Object.keys(json.tensors).filter((n) => n.startsWith("grad.")).map((n) => src(n)?.data ?? []);
  const coefE = clipCoef(gradsOf((n) => expected.get(n)), opt.clip_grad_norm);
  const coefA = clipCoef(gradsOf((n) => outputs[n]), opt.clip_grad_norm);
  const u = (g: number): number => (opt.lr * g) / (Math.abs(g) + opt.eps);
  const steps = k === 1 ? 1 : 2 - opt.lr * opt.weight_decay;
  const out = new Float64Array(actual.data.length);
  let maxSlack = 0;
  for (let i = 0; i < out.length; i++) {
    const slack = Math.abs(u(gA.data[i] * coefA) - u(gE.data[i] * coefE)) * steps;
    if (slack > maxSlack) maxSlack = slack;
    const e = exp.data[i], d = actual.data[i] - e;
    out[i] = Number.isFinite(d)
      ? e + Math.sign(d) * Math.max(0, Math.abs(d) - slack)
      : actual.data[i];
  }
  return { actual: { shape: actual.shape, data: out }, maxSlack };
}
