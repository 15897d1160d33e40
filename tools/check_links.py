#!/usr/bin/env python3
"""Check that every relative link in the repository's Markdown files resolves.

Why: the README points into docs/ and bench/results/, and those point at raw outputs and
at each other's sections; a moved file or a renamed heading would otherwise break them
silently.

Scans every `.md` file under the root (skipping `.git/`, every `target/`, `fuzz/corpus/`)
for inline links and images (`[text](target)`, `![alt](target)`) and reference
definitions (`[label]: target`) outside code, and for every target that is not a URL:

- the file or directory must exist (relative to the linking file; `/x` from the root);
- a `#anchor` on a Markdown file (or on the linking file itself) must match one of its
  headings by GitHub's rules: lowercase, punctuation other than `-` and `_` dropped,
  spaces turned into `-`, repeated headings numbered `-1`, `-2`, ...; explicit
  `id="..."` / `name="..."` anchors count too.

Exit status 0 when every link resolves, 1 with one `file:line: target (reason)` line per
broken link. `--root DIR` checks another tree; `--self-test` checks the checker on a
temporary tree with one good and one broken link of each kind.

Standard library only.
"""

import argparse
import os
import re
import sys
import tempfile

SKIP_DIRS = {".git", "target", "node_modules"}
SKIP_PATHS = {os.path.join("fuzz", "corpus"), os.path.join("bench", "compare-memberlist", "target")}

INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*(<[^>]*>|[^()\s]*(?:\([^()\s]*\)[^()\s]*)*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^()]*\)))?\s*\)")
REFDEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
HTML_ID = re.compile(r"""<[^>]+\b(?:id|name)\s*=\s*["']([^"']+)["']""")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def markdown_files(root):
    """Every .md file under root, skipping build outputs, .git and fuzz corpora."""
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        keep = []
        for d in dirnames:
            sub = os.path.normpath(os.path.join(rel, d))
            if d in SKIP_DIRS or sub in SKIP_PATHS:
                continue
            keep.append(d)
        dirnames[:] = sorted(keep)
        for f in sorted(filenames):
            if f.endswith(".md"):
                yield os.path.join(dirpath, f)


def prose_lines(text):
    """(line number, line) outside fenced code blocks, with inline code spans blanked."""
    fence = None
    for n, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            continue
        if m:
            fence = m.group(1)
            continue
        if line.startswith("    ") or line.startswith("\t"):
            # An indented code block (or a continuation line of a list item; links in
            # those are rare and still checked when the line holds a link).
            if "](" not in line:
                continue
        yield n, re.sub(r"(`+)(.+?)\1", lambda m: " " * len(m.group(0)), line)


def github_anchor(heading):
    """The anchor GitHub gives a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: keep their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors_of(path, cache):
    """Every anchor a Markdown file defines."""
    if path not in cache:
        found = set()
        counts = {}
        with open(path, encoding="utf-8") as f:
            text = f.read()
        fence = None
        for line in text.split("\n"):
            m = FENCE.match(line)
            if fence:
                if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                    fence = None
                continue
            if m:
                fence = m.group(1)
                continue
            for a in HTML_ID.findall(line):
                found.add(a)
            h = HEADING.match(line)
            if h:
                base = github_anchor(h.group(2))
                k = counts.get(base, 0)
                counts[base] = k + 1
                found.add(base if k == 0 else "%s-%d" % (base, k))
        cache[path] = found
    return cache[path]


def link_targets(text):
    """(line number, target) of every link and image in prose."""
    for n, line in prose_lines(text):
        for m in INLINE.finditer(line):
            yield n, m.group(1)
        m = REFDEF.match(line)
        if m:
            yield n, m.group(1)


def check(root):
    """Broken links under root, as (file relative to root, line, target, reason)."""
    root = os.path.abspath(root)
    cache = {}
    broken = []
    for md in markdown_files(root):
        with open(md, encoding="utf-8") as f:
            text = f.read()
        for n, target in link_targets(text):
            target = target.strip("<>")
            if not target or SCHEME.match(target):
                continue
            path_part, _, frag = target.partition("#")
            path_part = path_part.split("?", 1)[0]
            if path_part:
                from_urlish = path_part.replace("%20", " ")
                if from_urlish.startswith("/"):
                    dest = os.path.join(root, from_urlish.lstrip("/"))
                else:
                    dest = os.path.join(os.path.dirname(md), from_urlish)
                dest = os.path.normpath(dest)
                if not os.path.exists(dest):
                    broken.append((os.path.relpath(md, root), n, target, "no such file"))
                    continue
            else:
                dest = md
            if frag and dest.endswith(".md") and os.path.isfile(dest):
                if frag.lower() not in anchors_of(dest, cache):
                    broken.append((os.path.relpath(md, root), n, target, "no such heading"))
    return broken


def report(broken, out):
    for f, n, target, why in broken:
        print("%s:%d: %s (%s)" % (f, n, target, why), file=out)


def self_test():
    """Check the checker: a tree with good and broken links must give exactly the broken."""
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "docs"))
        os.makedirs(os.path.join(d, "target"))
        with open(os.path.join(d, "README.md"), "w", encoding="utf-8") as f:
            f.write(
                "# Top\n\n"
                "Good: [guide](docs/guide.md#set-up-a-node-fast) and [self](#top).\n"
                "Broken file: [gone](docs/missing.md).\n"
                "Broken anchor: [bad](docs/guide.md#no-such-heading).\n"
                "Not checked: `[code](nowhere.md)` and [web](https://example.com/x.md).\n"
                "```\n[fenced](nowhere-either.md)\n```\n"
            )
        with open(os.path.join(d, "docs", "guide.md"), "w", encoding="utf-8") as f:
            f.write("# Guide\n\n## Set up a node (fast!)\n\n![img](../README.md)\n")
        with open(os.path.join(d, "target", "skipped.md"), "w", encoding="utf-8") as f:
            f.write("[skipped](nowhere.md)\n")
        got = sorted((f, n, t) for f, n, t, _ in check(d))
        want = [
            ("README.md", 4, "docs/missing.md"),
            ("README.md", 5, "docs/guide.md#no-such-heading"),
        ]
        if got != want:
            print("self-test FAILED: expected %r, got %r" % (want, got), file=sys.stderr)
            return 1
        print("self-test passed: the good links resolve, both broken links are reported")
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()
    if args.self_test:
        return self_test()
    broken = check(args.root)
    if broken:
        report(broken, sys.stdout)
        print("%d broken link(s)" % len(broken))
        return 1
    print("every relative link resolves")
    return 0


if __name__ == "__main__":
    sys.exit(main())
