#!/usr/bin/env bash
# Prunes the GPU pack (.gpu, from `bash ../shared/tools/gpu-pack.sh`) to fit the 64 MiB a device
# call carries: drops the npm packages the benches never import (default: vega and vega-lite, the
# plots' renderers, with every package only they pull in) from .gpu/deno.json's imports, from
# .gpu/deno.lock (specifiers, workspace list, npm entries) and from the packed npm cache, and
# copies each kept package's registry.json from the local deno cache where the pack lacks it
# (offline deno needs it to resolve), and slims what stays: source maps, type declarations (deno run
# does not type-check npm code) and TypeScript sources no export reaches (zod's 3.8 MB src/). On
# 2026-12-06: 75 MB → 42 MB, beside the 18.6 MB tree. Then run `bash tools/check_gpu_pack.sh`
# (session 24 lost a machine to a lock that still listed vega).
#
#   bash tools/prune_gpu_pack.sh [PACKAGE ...]   (default: vega vega-lite)
#
# Environment: DENO (default `deno`), for the local cache's path. Exit 0: pruned (sizes printed);
# 2: no pack here, or not run from the repository root.
set -u
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
if [ ! -f .gpu/deno.json ] || [ ! -f .gpu/deno.lock ] || [ ! -d .gpu/deno-dir/npm ]; then
  echo "tools/prune_gpu_pack.sh: no .gpu pack here; run it from the repository root after" \
    "bash ../shared/tools/gpu-pack.sh" >&2
  exit 2
fi
deno=${DENO:-deno}
local_npm=$("$deno" info --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["npmCache"])' 2>/dev/null || true)
if [ $# -gt 0 ]; then drop=("$@"); else drop=(vega vega-lite); fi
du -sh .gpu | sed 's/^/before: /'
python3 - "$local_npm" "${drop[@]}" <<'EOF'
import json, os, shutil, sys

local_npm, drop = sys.argv[1], set(sys.argv[2:])
reg = ".gpu/deno-dir/npm/registry.npmjs.org"
conf = json.load(open(".gpu/deno.json"))
conf["imports"] = {k: v for k, v in conf["imports"].items() if k not in drop}
json.dump(conf, open(".gpu/deno.json", "w"), indent=2)

lock = json.load(open(".gpu/deno.lock"))
def name_of(spec):  # "npm:@a/b@1.2.3" or "@a/b@1.2.3_peer" -> "@a/b"
    s = spec[4:] if spec.startswith("npm:") else spec
    return s[: s.index("@", 1)]
lock["specifiers"] = {k: v for k, v in lock["specifiers"].items() if name_of(k) not in drop}
ws = lock.get("workspace", {})
ws["dependencies"] = [d for d in ws.get("dependencies", []) if name_of(d) not in drop]
# keep what the remaining roots reach
roots = [f"{name_of(k)}@{v}" for k, v in lock["specifiers"].items()]
npm, keep, todo = lock["npm"], set(), list(roots)
while todo:
    key = todo.pop()
    if key in keep or key not in npm:
        continue
    keep.add(key)
    for dep in npm[key].get("dependencies", []):
        # a dependency is "name", "name@version" or "alias@npm:name@version"
        if "@npm:" in dep:
            dep = dep.split("@npm:", 1)[1]
        if dep in npm:
            todo.append(dep)
        else:  # by name alone where one version is locked
            todo.extend(k for k in npm if name_of(k) == dep)
lock["npm"] = {k: v for k, v in npm.items() if k in keep}
json.dump(lock, open(".gpu/deno.lock", "w"), indent=2)

kept_names = {name_of(k) for k in keep}
def packages(root):
    for e in sorted(os.listdir(root)):
        if e.startswith("@"):
            for s in sorted(os.listdir(os.path.join(root, e))):
                yield f"{e}/{s}"
        else:
            yield e
removed = []
for p in list(packages(reg)):
    if p not in kept_names:
        shutil.rmtree(os.path.join(reg, p))
        removed.append(p)
for scope in [e for e in os.listdir(reg) if e.startswith("@")]:
    if not os.listdir(os.path.join(reg, scope)):
        os.rmdir(os.path.join(reg, scope))
copied = []
for p in sorted(kept_names):
    dst = os.path.join(reg, p, "registry.json")
    src = os.path.join(local_npm, "registry.npmjs.org", p, "registry.json") if local_npm else ""
    if os.path.isdir(os.path.join(reg, p)) and not os.path.exists(dst) and src and os.path.exists(src):
        shutil.copy(src, dst)
        copied.append(p)
# slim what stays: source maps and type declarations (deno run does not type-check npm code), and
# a package's TypeScript sources (src/) where no export but a custom "@..." condition points there
slimmed = 0
def targets(x, cond=""):
    if isinstance(x, str):
        if not cond.startswith("@") and cond != "types":
            yield x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from targets(v, k if not k.startswith(".") else cond)
for p in sorted(kept_names):
    for ver in os.listdir(os.path.join(reg, p)) if os.path.isdir(os.path.join(reg, p)) else []:
        root = os.path.join(reg, p, ver)
        if not os.path.isdir(root):
            continue
        for d, _, files in os.walk(root):
            for f in files:
                if f.endswith((".map", ".d.ts", ".d.cts", ".d.mts")):
                    slimmed += os.path.getsize(os.path.join(d, f))
                    os.remove(os.path.join(d, f))
        pkg = json.load(open(os.path.join(root, "package.json")))
        used = [t for k in ("main", "module", "browser", "exports") for t in targets(pkg.get(k))]
        src = os.path.join(root, "src")
        if os.path.isdir(src) and not any(t.lstrip("./").startswith("src") for t in used):
            for d, _, files in os.walk(src):
                slimmed += sum(os.path.getsize(os.path.join(d, f)) for f in files)
            shutil.rmtree(src)
print(f"slimmed {slimmed / 1e6:.1f} MB (source maps, declarations, unused sources)")
print(f"kept {len(keep)} npm entries; removed {len(removed)} packages; registry.json copied for: "
      f"{', '.join(copied) or 'none'}")
missing = [p for p in sorted(kept_names) if not os.path.exists(os.path.join(reg, p, "registry.json"))]
if missing:
    print(f"warning: no registry.json for {', '.join(missing)} (offline deno may fail to resolve them)")
EOF
du -sh .gpu | sed 's/^/after: /'
