/**
 * The list of kernel files in `shaders/`. The GPU runtime preloads these when
 * it starts (from disk or over HTTP), so that op launchers can create
 * pipelines synchronously. A test checks that this list equals the folder.
 *
 * @module
 */

/** Shader file names (without `.wgsl`) that ship with the package. */
export const SHADER_FILES: readonly string[] = [
  "adamw",
  "attention",
  "attention_backward",
  "cast",
  "dms_cache",
  "dms_decision",
  "dms_decision_backward",
  "elementwise",
  "embedding",
  "embedding_backward",
  "gemv",
  "gemv_acc",
  "gemv_norm",
  "gemv_rn",
  "heads_rope",
  "heads_rope_append",
  "layout",
  "loss",
  "matmul",
  "matmul_backward",
  "matmul_big",
  "noise",
  "paged_attention",
  "paged_copy",
  "paged_decode",
  "paged_decode_combine",
  "paged_decode_merge",
  "paged_decode_out",
  "paged_kv",
  "paged_prefill",
  "paged_prefill_wide",
  "paged_simple",
  "quest",
  "random",
  "reduce",
  "rmsnorm",
  "rmsnorm_backward",
  "rope",
  "rope_backward",
  "sample",
  "sample_naive",
  "sample_split",
  "score_evict",
  "silu",
  "silu_backward",
  "skinny",
  "softmax",
  "streaming_llm",
];
