// The prefill kernels' tile-level visibility (SPEC §5.1), included by paged_prefill.wgsl and
// paged_prefill_wide.wgsl; it uses the includer's `p.window`.

// Whether some query at a position in [qlo, qhi] sees the key (kp, mark): a key is visible from
// its own position on, for good (mark 0) or for `window` more positions (mark 1); never (mark 2).
// A tile's key for which this is false is not read at all (its K and V words stay 0), so nothing
// it holds, a NaN included, reaches the tile's sums: the decode kernels never read such keys
// either.
fn seen_by_tile(kp: i32, mark: i32, qlo: i32, qhi: i32) -> bool {
  return qhi >= 0 && mark != 2 && kp <= qhi && (mark == 0 || qlo - kp <= p.window);
}
