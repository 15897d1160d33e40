#!/usr/bin/env python3
"""Import graph of the crate's `src/` tree, and a check that its arrows point one way.

Files are the nodes. An arrow runs from a file to the file that defines what it names:
`use crate::…`, `use super::…`, `use self::…`, `use child::…`, and the same paths
written inline (`crate::wire::VERSION`, `super::udp::RX_BATCH`). A path resolves to
the deepest module that exists for its prefix; a name that module only imports
(`pub use child::X`, or a private `use`) is followed to the file that defines it, so
`super::X` re-exported by a parent resolves to the sibling that holds `X`. A
`mod child;` declaration is an arrow from the parent to the child (the parent owns
it), except under `#[cfg(test)]`: a test module is not something its parent uses.

With those arrows, a child that names something its parent `mod.rs` defines closes a
circle, and so does any pair of files that name each other. `--check` exits 1 and
names every circle (strongly connected component of more than one file).

Usage:
  tools/import_graph.py [--root DIR]          print the arrows, one a line
  tools/import_graph.py --dot [--root DIR]    print them as Graphviz DOT
  tools/import_graph.py --check [--root DIR]  exit 1 on any circle
  tools/import_graph.py --self-test           check the checker on synthetic trees

Standard library only: CI runs it before the build.
"""

import argparse
import os
import re
import sys
import tempfile

# ---------------------------------------------------------------- lexing

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RAW_STR = re.compile(r'b?r(#*)"')
_CHAR = re.compile(r"'(?:\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'\n])'")


def tokenize(text):
    """Rust source to a list of tokens: identifiers, `::`, and single punctuation.

    Comments (doc comments too), string and char literals are dropped: a path in a
    doc link or a string is not an import.
    """
    toks = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif text.startswith("//", i):
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
        elif _RAW_STR.match(text, i):
            m = _RAW_STR.match(text, i)
            end = text.find('"' + m.group(1), m.end())
            i = n if end < 0 else end + 1 + len(m.group(1))
        elif c == '"' or (c == "b" and text.startswith('b"', i)):
            i += 2 if c == "b" else 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif c == "'" or (c == "b" and text.startswith("b'", i)):
            m = _CHAR.match(text, i + (1 if c == "b" else 0))
            if m:
                i = m.end()
            else:  # a lifetime or label: skip the quote, the name follows
                i += 1
        elif c == "$" and text.startswith("$crate", i):
            toks.append("crate")
            i += len("$crate")
        elif _IDENT.match(text, i):
            m = _IDENT.match(text, i)
            word = m.group(0)
            # r#ident is a raw identifier; b/r prefixes of literals were handled above.
            toks.append(word)
            i = m.end()
        elif text.startswith("::", i):
            toks.append("::")
            i += 2
        else:
            toks.append(c)
            i += 1
    return toks


# ---------------------------------------------------------------- parsing


def parse_use_tree(toks, i, prefix, out):
    """Parses one use tree at toks[i]; appends (segments, alias) to out; returns the
    index after it. alias is the name the tree binds ('*' for a glob)."""
    segs = list(prefix)
    if i < len(toks) and toks[i] == "::":  # `use ::std::…`
        i += 1
    while i < len(toks):
        t = toks[i]
        if t == "{":
            i += 1
            while i < len(toks) and toks[i] != "}":
                i = parse_use_tree(toks, i, segs, out)
                if i < len(toks) and toks[i] == ",":
                    i += 1
            return i + 1
        if t == "*":
            out.append((segs, "*"))
            return i + 1
        if _IDENT.fullmatch(t):
            segs.append(t)
            i += 1
            if i < len(toks) and toks[i] == "::":
                i += 1
                continue
            alias = segs[-1]
            if i + 1 < len(toks) and toks[i] == "as":
                alias = toks[i + 1]
                i += 2
            if alias == "self":
                segs = segs[:-1]
                alias = segs[-1] if segs else "self"
            elif segs[-1] == "self":
                segs = segs[:-1]
            out.append((segs, alias))
            return i
        return i + 1
    return i


class Scope:
    """One module as the parser sees it: its path, the file that holds it, the child
    modules it declares, and the names its `use` items bring in."""

    def __init__(self, crate, path, file):
        self.crate = crate
        self.path = tuple(path)
        self.file = file
        self.uses = {}  # name -> segments as written
        self.globs = []  # segments of `use …::*`
        self.paths = []  # (segments, is_use) as written in this scope


_CFG_TEST = ["#", "[", "cfg", "(", "test", ")", "]"]


def is_cfg_test(toks, i):
    """Whether the `mod` at toks[i] is under `#[cfg(test)]` (with `pub` or
    `pub(…)` between)."""
    j = i
    if j >= 1 and toks[j - 1] == "pub":
        j -= 1
    elif j >= 4 and toks[j - 4] == "pub" and toks[j - 3] == "(" and toks[j - 1] == ")":
        j -= 4
    return toks[max(0, j - len(_CFG_TEST)) : j] == _CFG_TEST


def child_file(parent_file, is_dir_owner, name, inline_prefix):
    """Where `mod name;` declared in parent_file lives (None if nowhere)."""
    base = os.path.dirname(parent_file)
    if not is_dir_owner:
        base = os.path.join(base, os.path.splitext(os.path.basename(parent_file))[0])
    base = os.path.join(base, *inline_prefix)
    for cand in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
        if os.path.isfile(cand):
            return cand
    return None


def parse_file(crate, modpath, file, scopes, mod_edges, pending, in_test=False):
    """Parses one file: its scopes (the file module and inline `mod x { … }` ones),
    their paths, and the `mod x;` files it owns (queued in pending). `in_test`: the
    file is (inside) a `#[cfg(test)]` module, and so is every module it declares."""
    with open(file, encoding="utf-8") as f:
        toks = tokenize(f.read())
    owner = os.path.basename(file) in ("mod.rs", "lib.rs", "main.rs")
    root = Scope(crate, modpath, file)
    scopes[(crate, root.path)] = root
    stack = [(root, 0, ())]  # (scope, brace depth it opened at, inline names)
    depth = 0
    i = 0
    while i < len(toks):
        t = toks[i]
        scope, _, inline = stack[-1]
        if t == "{":
            depth += 1
            i += 1
        elif t == "}":
            depth -= 1
            if len(stack) > 1 and stack[-1][1] == depth:
                stack.pop()
            i += 1
        elif t == "mod" and i + 2 < len(toks) and _IDENT.fullmatch(toks[i + 1]):
            name, nxt = toks[i + 1], toks[i + 2]
            is_test = in_test or is_cfg_test(toks, i)
            if nxt == "{":
                sub = Scope(crate, scope.path + (name,), file)
                scopes[(crate, sub.path)] = sub
                depth += 1
                stack.append((sub, depth - 1, inline + (name,)))
                i += 3
            elif nxt == ";":
                cf = child_file(file, owner, name, inline)
                if cf is not None:
                    if not is_test:
                        mod_edges.append((file, cf))
                    pending.append((crate, scope.path + (name,), cf, is_test))
                i += 3
            else:
                i += 1
        elif t == "use" and (i == 0 or toks[i - 1] in (";", "{", "}", "]", "pub", ")")):
            out = []
            j = parse_use_tree(toks, i + 1, [], out)
            while j < len(toks) and toks[j] != ";":
                j += 1
            for segs, alias in out:
                if not segs:
                    continue
                scope.paths.append((segs, True))
                if alias == "*":
                    scope.globs.append(segs)
                else:
                    scope.uses[alias] = segs
            i = j + 1
        elif _IDENT.fullmatch(t) and i + 2 < len(toks) and toks[i + 1] == "::" and (
            i == 0 or toks[i - 1] not in ("::", "in")
        ):
            segs = [t]
            j = i + 1
            while j + 1 < len(toks) and toks[j] == "::" and _IDENT.fullmatch(toks[j + 1]):
                segs.append(toks[j + 1])
                j += 2
            if len(segs) > 1:
                scope.paths.append((segs, False))
            i = j
        else:
            i += 1


# ---------------------------------------------------------------- resolving


class Graph:
    def __init__(self, src):
        self.src = src
        self.scopes = {}
        self.mod_edges = []
        self.files = []
        roots = []
        lib = os.path.join(src, "lib.rs")
        if os.path.isfile(lib):
            roots.append(("lib", lib))
        main = os.path.join(src, "main.rs")
        if os.path.isfile(main):
            roots.append(("bin:main", main))
        bindir = os.path.join(src, "bin")
        if os.path.isdir(bindir):
            for name in sorted(os.listdir(bindir)):
                p = os.path.join(bindir, name)
                if name.endswith(".rs"):
                    roots.append(("bin:" + name[:-3], p))
                elif os.path.isfile(os.path.join(p, "main.rs")):
                    roots.append(("bin:" + name, os.path.join(p, "main.rs")))
        pending = [(crate, (), f, False) for crate, f in roots]
        seen = set()
        while pending:
            crate, path, f, in_test = pending.pop()
            if (crate, f) in seen:
                continue
            seen.add((crate, f))
            self.files.append(f)
            parse_file(crate, path, f, self.scopes, self.mod_edges, pending, in_test)
        self.has_lib = os.path.isfile(lib)

    def base_of(self, scope, segs, is_use):
        """(crate, module path, remaining segments) a path starts from, or None for a
        path into another crate."""
        first = segs[0]
        if first == "crate":
            return scope.crate, (), segs[1:]
        if first == "self":
            return scope.crate, scope.path, segs[1:]
        if first == "super":
            path = list(scope.path)
            rest = list(segs)
            while rest and rest[0] == "super":
                if path:
                    path.pop()
                rest = rest[1:]
            return scope.crate, tuple(path), rest
        if first == "plumcore" and scope.crate != "lib" and self.has_lib:
            return "lib", (), segs[1:]
        if (scope.crate, scope.path + (first,)) in self.scopes:
            return scope.crate, scope.path, segs
        if not is_use and first in scope.uses:
            # `wire::VERSION` after `use crate::wire;`: follow the import.
            return self.base_of(scope, scope.uses[first] + segs[1:], True)
        return None

    def resolve(self, scope, segs, is_use, hops=0):
        """The file that defines what segs (written in scope) names, or None."""
        base = self.base_of(scope, segs, is_use)
        if base is None or hops > 16:
            return None
        crate, path, rest = base
        rest = list(rest)
        while rest and (crate, path + (rest[0],)) in self.scopes:
            path = path + (rest[0],)
            rest.pop(0)
        target = self.scopes.get((crate, path))
        if target is None:
            return None
        if rest and rest[0] in target.uses and target.uses[rest[0]] != segs:
            # The module only imports this name: follow it to where it is defined.
            found = self.resolve(target, target.uses[rest[0]] + rest[1:], True, hops + 1)
            if found is not None:
                return found
        return target.file

    def why(self, a, b):
        """The paths in file a that resolve to file b (for --why)."""
        out = []
        for scope in self.scopes.values():
            if scope.file != a:
                continue
            for segs, is_use in scope.paths:
                if self.resolve(scope, segs, is_use) == b:
                    out.append("::".join(segs))
        return sorted(set(out))

    def edges(self):
        """Sorted (from, to, kind) arrows between distinct files."""
        out = set((a, b, "mod") for a, b in self.mod_edges)
        for scope in self.scopes.values():
            for segs, is_use in scope.paths:
                to = self.resolve(scope, segs, is_use)
                if to is not None and to != scope.file:
                    out.add((scope.file, to, "use"))
        # A pair joined by both a `mod` and a `use` arrow is listed once, as `use`.
        uses = {(a, b) for a, b, k in out if k == "use"}
        return sorted(e for e in out if e[2] == "use" or (e[0], e[1]) not in uses)


def circles(files, edges):
    """Strongly connected components of more than one file (Tarjan), each sorted."""
    succ = {f: [] for f in files}
    for a, b, _ in edges:
        succ.setdefault(a, []).append(b)
        succ.setdefault(b, [])
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        # Iterative DFS: deep trees must not hit Python's recursion limit.
        work = [(v, iter(succ[v]))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(succ[w])))
                    advanced = True
                    break
                if w in on:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))

    for v in sorted(succ):
        if v not in index:
            visit(v)
    return sorted(out)


# ---------------------------------------------------------------- output


def rel(src, f):
    return os.path.relpath(f, os.path.dirname(src.rstrip("/")) or ".")


def report(src, check, dot, out=sys.stdout):
    g = Graph(src)
    edges = g.edges()
    found = circles(g.files, edges)
    if dot:
        print("digraph imports {", file=out)
        for a, b, kind in edges:
            style = ' [style=dashed]' if kind == "mod" else ""
            print(f'  "{rel(src, a)}" -> "{rel(src, b)}"{style};', file=out)
        print("}", file=out)
    elif not check:
        for a, b, kind in edges:
            print(f"{rel(src, a)} -> {rel(src, b)} ({kind})", file=out)
    inside = {}
    for comp in found:
        members = set(comp)
        inside[id(comp)] = [(a, b, k) for a, b, k in edges if a in members and b in members]
    if check or found:
        dest = out if check else sys.stderr
        print(f"import graph: {len(g.files)} files, {len(edges)} arrows", file=dest)
        for comp in found:
            print(f"circle of {len(comp)} files:", file=dest)
            for a, b, kind in inside[id(comp)]:
                why = ", ".join(g.why(a, b)) if kind == "use" else "mod"
                print(f"  {rel(src, a)} -> {rel(src, b)}: {why}", file=dest)
        if not found:
            print("no circles", file=dest)
    return 1 if found else 0


# ---------------------------------------------------------------- self-test

_SELF_TESTS = [
    (
        "two files that name each other",
        {
            "lib.rs": "pub mod a;\npub mod b;\n",
            "a.rs": "use crate::b::B;\npub struct A;\n",
            "b.rs": "pub struct B;\nfn f() -> crate::a::A { crate::a::A }\n",
        },
        [["src/a.rs", "src/b.rs"]],
    ),
    (
        "a child that names its parent's own item",
        {
            "lib.rs": "pub mod n;\n",
            "n/mod.rs": "mod kid;\npub struct Parent;\npub use kid::Kid;\n",
            "n/kid.rs": "use super::Parent;\npub struct Kid(Parent);\n",
        },
        [["src/n/kid.rs", "src/n/mod.rs"]],
    ),
    (
        "a sibling reached through the parent's re-export is no circle",
        {
            "lib.rs": "pub mod n;\n",
            "n/mod.rs": "mod a;\nmod b;\npub use a::A;\n/// [`super::n::b`] in a doc is no arrow.\npub fn run() { b::go() }\n",
            "n/a.rs": "pub struct A;\n",
            "n/b.rs": 'use super::A;\npub fn go() { let _ = "crate::n::run"; let _a = A; }\n',
        },
        [],
    ),
    (
        "three files in a ring, reached by inline paths and a use tree",
        {
            "lib.rs": "pub mod x;\npub mod y;\npub mod z;\n",
            "x.rs": "use crate::{y::{self, Y}};\npub struct X;\nfn f() { y::g(); }\n",
            "y.rs": "pub struct Y;\npub fn g() { let _ = crate::z::Z; }\n",
            "z/mod.rs": "mod deep;\npub struct Z;\n#[cfg(test)]\nmod tests;\n",
            "z/deep.rs": "fn h() -> crate::x::X { crate::x::X }\n",
            "z/tests.rs": "use super::*;\n",
        },
        [["src/x.rs", "src/y.rs", "src/z/deep.rs", "src/z/mod.rs"]],
    ),
    (
        "a test module that uses its parent is no circle",
        {
            "lib.rs": "pub mod t;\n",
            "t/mod.rs": "pub struct T;\n#[cfg(test)]\nmod tests;\n",
            "t/tests.rs": "use super::*;\nuse super::T;\n",
        },
        [],
    ),
    (
        "a test module split into files that use their shared fixtures is no circle",
        {
            "lib.rs": "pub mod t;\n",
            "t/mod.rs": "pub struct T;\n#[cfg(test)]\nmod tests;\n",
            "t/tests/mod.rs": "mod a;\npub fn fixture() -> super::T { super::T }\n",
            "t/tests/a.rs": "use super::*;\nfn f() { let _ = super::fixture(); }\n",
        },
        [],
    ),
]


def self_test():
    failed = 0
    for name, files, want in _SELF_TESTS:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "src")
            for path, text in files.items():
                full = os.path.join(src, path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "w", encoding="utf-8") as f:
                    f.write(text)
            g = Graph(src)
            got = [[rel(src, f) for f in comp] for comp in circles(g.files, g.edges())]
            ok = got == want
            failed += not ok
            print(f"self-test {'ok' if ok else 'FAILED'}: {name}")
            if not ok:
                print(f"  want {want}\n  got  {got}")
                for a, b, k in g.edges():
                    print(f"  {rel(src, a)} -> {rel(src, b)} ({k})")
    print(f"self-test: {len(_SELF_TESTS) - failed} of {len(_SELF_TESTS)} passed")
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=".", help="crate directory holding src/ (default .)")
    ap.add_argument("--check", action="store_true", help="exit 1 naming every circle")
    ap.add_argument("--dot", action="store_true", help="print Graphviz DOT")
    ap.add_argument("--self-test", action="store_true", help="check the checker")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    src = os.path.join(args.root, "src")
    if not os.path.isdir(src):
        print(f"import graph: no src/ under {args.root}", file=sys.stderr)
        return 2
    return report(src, args.check, args.dot)


if __name__ == "__main__":
    sys.exit(main())
