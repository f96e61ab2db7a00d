// The one Node built-in the package's import graph names (src/eval/case_folder.ts turns a
// file: URL of a conformance case folder into a path): the page maps `node:url` here with an
// import map. Browsers have no file: case folders; this is only so that mod.ts loads.
export function fileURLToPath(url) {
  return decodeURIComponent(new URL(url).pathname);
}
