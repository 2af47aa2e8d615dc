#!/usr/bin/env python3
"""Fails when a library crate's modules import each other in a circle.

For every crate under crates/ and tools/, each file of src/ (but main.rs and
src/bin/) is a module: src/a.rs and src/a/mod.rs are `a`, src/a/b.rs is
`a::b`, src/lib.rs is the crate root. A module depends on another when its
code names it through `crate::`, `super::` or, for a child module, its
bare name (in a `use` or in a path). Inline
modules (`mod tests { .. }`) belong to their file. Comments are not code:
an intra-doc link makes no dependency. The crate root depends on whatever
it names too, so an item that several modules share does not live in lib.rs.

Prints every cycle (a strongly connected component of more than one module)
and exits 1 if there is one. With --graph CRATE, prints that crate's edges;
with --self-test, checks the checker on small crates with and without cycles.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments(text):
    """Removes // and /* */ comments and the contents of string literals."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or (c == "'" and re.match(r"'\\[xu]", text[i:i + 3])):
            j = text.find("'", i + 2)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def strip_test_modules(text):
    """Removes `#[cfg(test)] mod name { .. }`: a test of a child module may
    name its parent's items without making the modules depend on each other."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += (text[j] == "{") - (text[j] == "}")
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def expand_use(tree):
    """`a::{b, c::{d, e as f}}` -> [[a, b], [a, c, d], [a, c, e]] (renames dropped)."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    paths = []

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            depth += (ch == "{") - (ch == "}")
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        return parts + ([cur] if cur else [])

    def walk(s, prefix):
        for p in split_top(s):
            if p.startswith("{") and p.endswith("}"):
                walk(p[1:-1], prefix)
                continue
            m = re.match(r"^(.*?)::\{(.*)\}$", p)
            if m:
                walk(m.group(2), prefix + m.group(1).split("::"))
            else:
                paths.append(prefix + [x for x in p.split("::") if x])

    walk(tree, [])
    return paths


def modules_of(crate_dir):
    src = os.path.join(crate_dir, "src")
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            full = os.path.join(dirpath, f)
            rel = os.path.relpath(full, src)
            if rel == "main.rs" or rel.startswith("bin" + os.sep):
                continue
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib"):
                parts = parts[:-1]
            mods[tuple(parts)] = full
    return mods


def resolve(segs, here, mods):
    """The module that the path `segs`, written in module `here`, names."""
    if not segs:
        return None
    if segs[0] == "crate":
        base, rest = (), segs[1:]
    elif segs[0] in ("super", "self"):
        base = here
        rest = list(segs)
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    best = base
    for k in range(len(rest), 0, -1):
        cand = tuple(base) + tuple(rest[:k])
        if cand in mods:
            best = cand
            break
    return tuple(best)


REEXPORT = re.compile(r"\bpub(?:\s*\([^)]*\))?\s+use\s+([^;]+);")


def reexports_of(mods):
    """name -> (defining path) for every `pub use` of a module: `crate::Error`
    re-exported from `error` names the module `error`, not the crate root."""
    table = {}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            text = strip_comments(fh.read())
        for m in REEXPORT.finditer(text):
            for p in expand_use(m.group(1)):
                if not p or p[-1] in ("*", "self"):
                    continue
                table[(mod, p[-1])] = (p, mod)
            for alias in re.finditer(r"(" + IDENT + r")\s+as\s+(" + IDENT + r")", m.group(1)):
                for p in expand_use(m.group(1)):
                    if p and p[-1] == alias.group(1):
                        table[(mod, alias.group(2))] = (p, mod)
    return table


def edges_of(mods):
    reexports = reexports_of(mods)
    edges = {m: set() for m in mods}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as fh:
            text = strip_test_modules(strip_comments(fh.read()))
        found = []
        # inline modules: `super::` inside them is one level less deep
        inline = []  # (brace depth at which it opened)
        depth = 0
        tokens = re.finditer(r"\bmod\s+" + IDENT + r"\s*\{|\{|\}|\buse\s+[^;]+;|(?<![\w:])" + IDENT + r"(?:\s*::\s*(?:" + IDENT + r"|\{))+", text)
        for t in tokens:
            s = t.group(0)
            if s.startswith("mod"):
                depth += 1
                inline.append(depth)
                continue
            if s == "{":
                depth += 1
                continue
            if s == "}":
                if inline and inline[-1] == depth:
                    inline.pop()
                depth -= 1
                continue
            here = tuple(mod) + tuple("<inline>" for _ in inline)
            if s.startswith("use"):
                body = s[3:-1].strip()
                for p in expand_use(body):
                    found.append((p, here))
            else:
                segs = [x for x in re.split(r"\s*::\s*", s) if x and x != "{"]
                found.append((segs, here))
        for segs, here in found:
            # `super::` inside an inline module first leaves the inline levels
            level = here.count("<inline>")
            base, rest = tuple(mod), list(segs)
            while rest and rest[0] in ("super", "self"):
                if rest[0] == "super":
                    if level > 0:
                        level -= 1
                    else:
                        base = base[:-1]
                rest = rest[1:]
            if segs and segs[0] in ("super", "self") and level > 0:
                continue  # names something inside the same file
            if segs and segs[0] in ("super", "self"):
                target = resolve(["crate"] + list(base) + rest, (), mods)
            elif segs and segs[0] == "crate":
                target = resolve(segs, tuple(mod), mods)
            elif segs and tuple(mod) + (segs[0],) in mods:
                # a child module named without `self::`
                target = resolve(["crate"] + list(mod) + list(segs), (), mods)
            else:
                continue
            if target is not None:
                target = follow(target, segs, reexports, mods)
            if target is not None and target != tuple(mod) and target in mods:
                edges[mod].add(target)
    return edges


def follow(target, segs, reexports, mods, depth=0):
    """If `segs` names an item that `target` only re-exports, the module
    that defines it."""
    names = [x for x in segs if x not in ("crate", "super", "self")]
    for i, name in enumerate(names):
        key = (target, name)
        if key in reexports and depth < 8:
            p, where = reexports[key]
            if p and p[0] in ("crate", "super", "self"):
                t = resolve(p, where, mods)
            elif p and tuple(where) + (p[0],) in mods:
                t = resolve(["crate"] + list(where) + p, (), mods)
            else:
                return target
            if t is None or t == target:
                return target
            return follow(t, p, reexports, mods, depth + 1)
    return target


def sccs(edges):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def name(m):
    return "crate::" + "::".join(m) if m else "crate"


def crates():
    for top in ("crates", "tools"):
        d = os.path.join(ROOT, top)
        if not os.path.isdir(d):
            continue
        for c in sorted(os.listdir(d)):
            if os.path.isfile(os.path.join(d, c, "src", "lib.rs")):
                yield c, os.path.join(d, c)


def self_test():
    """The checker finds a cycle through `use crate::`, `super::`, a bare
    child path and a root re-export, and none in what only looks like one
    (comments, strings, a child's tests naming its parent)."""
    import tempfile

    def crate(files):
        with tempfile.TemporaryDirectory(prefix="module-cycles-") as d:
            for rel, text in files.items():
                path = os.path.join(d, "src", rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(text)
            return sccs(edges_of(modules_of(d)))

    cyclic = [
        {"lib.rs": "mod a;\nmod b;\n", "a.rs": "use crate::b::X;\n", "b.rs": "use crate::{a::Y};\n"},
        {"lib.rs": "mod p;\n", "p/mod.rs": "mod c;\nfn f() { c::g() }\n", "p/c.rs": "use super::T;\n"},
        {"lib.rs": "mod e;\nmod u;\npub use e::Error;\n", "e.rs": "use crate::u::f;\n", "u.rs": "fn g() -> crate::Error { todo!() }\n"},
    ]
    clean = [
        {"lib.rs": "mod a;\nmod b;\n", "a.rs": "// use crate::b;\nconst S: &str = \"crate::b::x\";\n", "b.rs": "use crate::a::S;\n"},
        {"lib.rs": "mod p;\n", "p/mod.rs": "mod c;\nfn f() { c::g() }\n", "p/c.rs": "#[cfg(test)]\nmod tests {\n    use super::super::T;\n}\n"},
    ]
    for i, files in enumerate(cyclic):
        assert crate(files), f"cyclic case {i} not found"
    for i, files in enumerate(clean):
        assert not crate(files), f"clean case {i} reported: {crate(files)}"
    print(f"self-test: {len(cyclic)} cycles found, {len(clean)} clean crates clean")


def main():
    if len(sys.argv) == 2 and sys.argv[1] == "--self-test":
        self_test()
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "--graph":
        for c, d in crates():
            if c == sys.argv[2]:
                e = edges_of(modules_of(d))
                for m in sorted(e):
                    for t in sorted(e[m]):
                        print(f"{name(m)} -> {name(t)}")
        return 0
    bad = 0
    for c, d in crates():
        for comp in sccs(edges_of(modules_of(d))):
            bad += 1
            e = edges_of(modules_of(d))
            members = set(comp)
            print(f"{c}: module cycle among {', '.join(sorted(name(m) for m in comp))}")
            for m in sorted(comp):
                for t in sorted(e[m] & members):
                    print(f"    {name(m)} -> {name(t)}")
    if bad:
        print(f"{bad} module cycle(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
