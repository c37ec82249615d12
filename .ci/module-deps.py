#!/usr/bin/env python3
"""Module dependency graph of src/ from `crate::` paths, and the cycles in it.

    python3 .ci/module-deps.py            # edges and cycles between top-level modules
    python3 .ci/module-deps.py mcp sse    # also split these modules into their submodules

A module `a` depends on `b` when a non-test line of a file under src/a(.rs|/) names
`crate::b`. Test modules (`#[cfg(test)] mod …` to the end of the file) are skipped: tests may
reach anywhere. Prints every edge, then every cycle found (none: exit 0; some: exit 1).
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
split = set(sys.argv[1:])


def module_of(rel):
    parts = rel[:-3].split(os.sep)
    top = parts[0]
    if top in split and len(parts) > 1 and parts[1] != "mod":
        return f"{top}/{parts[1]}"
    return top


def target_of(path):
    parts = path.split("::")
    top = parts[0]
    if top in split and len(parts) > 1 and re.match(r"^[a-z_]+$", parts[1]):
        sub = f"{top}/{parts[1]}"
        if os.path.exists(os.path.join(SRC, top, parts[1] + ".rs")) or os.path.isdir(
            os.path.join(SRC, top, parts[1])
        ):
            return sub
    return top


edges = {}
for root, _, files in os.walk(SRC):
    for f in files:
        if not f.endswith(".rs"):
            continue
        rel = os.path.relpath(os.path.join(root, f), SRC)
        if rel in ("lib.rs", "main.rs"):
            continue
        me = module_of(rel)
        text = open(os.path.join(root, f), encoding="utf-8").read()
        cut = re.search(r"^#\[cfg\(test\)\]\s*\nmod ", text, re.M)
        if cut:
            text = text[: cut.start()]
        # Comments (doc links included) name modules without depending on them.
        text = "\n".join(l.split("//")[0] for l in text.splitlines())
        # `super::x` inside a split module names a sibling.
        for m in re.finditer(r"crate::([a-z_]+(?:::[a-z_]+)?)", text):
            other = target_of(m.group(1))
            if other != me and not other.startswith(me + "/"):
                edges.setdefault(me, set()).add(other)
        if "/" in me:
            parent = me.split("/")[0]
            for m in re.finditer(r"\bsuper::([a-z_]+)", text):
                sib = f"{parent}/{m.group(1)}"
                if sib != me and os.path.exists(os.path.join(SRC, parent, m.group(1) + ".rs")):
                    edges.setdefault(me, set()).add(sib)

for a in sorted(edges):
    print(f"{a} -> {', '.join(sorted(edges[a]))}")

# Cycles: strongly connected components with more than one module.
index, low, on, stack, comps, counter = {}, {}, set(), [], [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            comps.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
    if v not in index:
        visit(v)
print()
if comps:
    for c in comps:
        print("cycle:", " <-> ".join(c))
    sys.exit(1)
print("no cycles")
