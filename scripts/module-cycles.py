#!/usr/bin/env python3
"""Check for import cycles between the modules of a Rust crate.

Usage: python3 scripts/module-cycles.py SRC_DIR...   (each a crate's src: lib.rs, else main.rs)

The rule: modules form a tree (the root -> `mod a;` in a.rs or a/mod.rs, or an inline
`mod a {..}` -> ...). At every level the siblings (the children of one parent) are the nodes,
each standing for its whole subtree: A -> B when code in A's subtree refers to an item in B's
subtree. A cycle of such edges is an error. A module and its ancestors or descendants are one
concept: `use super::X` in a child or `use child::Y` in a parent is never an edge.

References: `use` declarations (nested groups, `pub use`, `use child::..`) and paths in code
that start with `crate::`, `super::` or `self::`, each resolved to the deepest module it names
(re-exports are not chased); paths into other crates are ignored. Comments, strings and char
literals are stripped first. Test code does not count: items under `#[cfg(test)]` or
`#[cfg(all(test, ..))]` (`mod tests;` with its file and subtree, an inline `mod tests {..}`,
a test-only fn) are skipped, as is a file that opens with `#![cfg(test)]`.

Output: `module-cycles: no cycles in N modules` and exit 0; otherwise, for each edge on a
cycle, the shortest cycle through it (each printed once) as `SRC: a -> b -> a (FILE:LINE
uses PATH; ...)`, one example reference per edge, and exit 1. Bad arguments: exit 2.
"""
import os
import re
import sys

TOKEN = re.compile(r"""
    (?P<skip> \s+ | //[^\n]*
      | [bc]?r(?P<h>\#*)".*?"(?P=h)                               # raw string r#"..."#
      | [bc]?"(?:\\.|[^"\\])*"                                    # string
      | b?'(?:\\(?:u\{[0-9a-fA-F]*\}|x[0-9a-fA-F]{2}|.)|[^\\'])'  # char literal
      | '\w+ )                                                    # lifetime or label
  | (?P<comment> /\* )
  | (?:r\#)?(?P<word> \w+ )
  | (?P<punct> :: | \S )""", re.X | re.S)


def lex(src):
    """Tokens (text, line) of Rust source: words, `::` and single punctuation characters."""
    toks, i, line = [], 0, 1
    while i < len(src):
        m = TOKEN.match(src, i)
        if m.group("comment"):  # block comments nest
            depth, j = 1, i + 2
            while depth and j < len(src):
                depth += src.startswith("/*", j) - src.startswith("*/", j)
                j += 2 if src[j:j + 2] in ("/*", "*/") else 1
            line, i = line + src.count("\n", i, j), j
            continue
        if not m.group("skip"):
            toks.append((m.group("word") or m.group("punct"), line))
        line, i = line + m.group().count("\n"), m.end()
    return toks + [("", line)] * 4  # sentinels


def is_test_cfg(attr):
    """`cfg(test)`, `cfg(all(test, ..))`; not `cfg(any(test, feature = ..))`, which ships."""
    if attr.startswith("cfg(all(") and "not(" not in attr:
        return "test" in attr[len("cfg(all("):-2].split(",")
    return attr == "cfg(test)"


def skip_item(toks, i, ends=";}"):
    """Index after the item that starts at i: its `;` or `{ .. }` block (or with ends="]", an
    attribute's `[ .. ]`), brackets balanced; or the index of the enclosing block's end."""
    depth = 0
    while toks[i][0]:
        t = toks[i][0]
        if t in ")]}" and depth == 0:
            return i
        depth += (t in "([{") - (t in ")]}")
        i += 1
        if depth == 0 and t in ends:
            return i
    return i


def use_tree(toks, i, segs, out):
    """Parse the use tree at i under the prefix segs; append its leaves (segs, line) to out."""
    segs = list(segs)
    while toks[i][0]:
        t, line = toks[i]
        if t == "{":
            i += 1
            while toks[i][0] not in ("}", ""):
                i = use_tree(toks, i, segs, out)
                i += toks[i][0] == ","
            return i + 1
        if t == "*":  # a glob names its module
            out.append((segs, line))
            return i + 1
        if t == "::":  # a leading `::`: another crate
            segs, i = ["::"], i + 1
            continue
        if not (t == "self" and segs):  # `a::{self, ..}` names `a`
            segs.append(t)
        i += 1 + 2 * (toks[i + 1][0] == "as")
        if toks[i][0] != "::":
            out.append((segs, line))
            return i
        i += 1
    return i


class Crate:
    def __init__(self, src):
        self.src = src
        self.modules = {}  # module path (a tuple of names) -> its file, relative to src
        self.children = {}  # module path -> names of its child modules
        self.refs = []  # (referring module, path segments, file, line, in a use)

    def add(self, mod, rel):
        self.modules[mod] = rel
        self.children.setdefault(mod, set())
        if mod:
            self.children[mod[:-1]].add(mod[-1])

    def load(self):
        root = "lib.rs" if os.path.isfile(os.path.join(self.src, "lib.rs")) else "main.rs"
        queue = [((), "", root)]
        while queue:
            mod, mod_dir, rel = queue.pop(0)
            self.add(mod, rel)
            for child, child_dir in self.parse(rel, mod, mod_dir):
                for cand in (child_dir + ".rs", os.path.join(child_dir, "mod.rs")):
                    if os.path.isfile(os.path.join(self.src, cand)):
                        queue.append((child, child_dir, cand))
                        break
                else:
                    print(f"module-cycles: warning: {self.src}/{rel}: no file for "
                          f"mod {'::'.join(child)}", file=sys.stderr)

    def parse(self, rel, mod, mod_dir):
        """Record the modules and references of one file; return its `mod x;` (module, dir)."""
        with open(os.path.join(self.src, rel), encoding="utf-8") as f:
            toks = lex(f.read())
        found, stack, depth, test, i = [], [(mod, mod_dir, 0)], 0, False, 0
        while toks[i][0]:
            t, nxt = toks[i][0], toks[i + 1][0]
            cur, cur_dir, _ = stack[-1]
            if t == "#" and nxt in ("[", "!"):
                j = i + 1 + (nxt == "!")
                k = skip_item(toks, j, "]") if toks[j][0] == "[" else j
                if is_test_cfg("".join(x for x, _ in toks[j + 1:k - 1])):
                    if nxt == "[":
                        test = True
                    elif i == 0 and mod:  # `#![cfg(test)]` opening a file: all of it is test code
                        del self.modules[mod]
                        self.children[mod[:-1]].discard(mod[-1])
                        return []
                i = k
            elif test:
                i, test = skip_item(toks, i), False
            elif t == "mod" and nxt[:1].isidentifier() and toks[i + 2][0] in (";", "{"):
                child, child_dir = cur + (nxt,), os.path.join(cur_dir, nxt)
                if toks[i + 2][0] == ";":
                    found.append((child, child_dir))
                else:
                    self.add(child, rel)
                    depth += 1
                    stack.append((child, child_dir, depth))
                i += 3
            elif t == "use" and nxt != "<":  # not `impl Trait + use<'a>`
                out, i = [], i + 1
                while toks[i][0] not in (";", ""):
                    i = use_tree(toks, i, [], out)
                self.refs += [(cur, segs, rel, line, True) for segs, line in out]
            elif t in ("crate", "super", "self") and nxt == "::" and toks[i - 1][0] != "::":
                segs = [t]
                while toks[i + 1][0] == "::" and toks[i + 2][0][:1].isidentifier():
                    segs.append(toks[i + 2][0])
                    i += 2
                self.refs.append((cur, segs, rel, toks[i][1], False))
                i += 1
            else:
                depth += (t == "{") - (t == "}")
                if len(stack) > 1 and depth < stack[-1][2]:
                    stack.pop()  # the inline module's block ends
                i += 1
        return found

    def resolve(self, mod, segs, in_use):
        """The deepest module of the tree that the path names, or None if not in this crate."""
        ups = next(k for k, s in enumerate(segs + [""]) if s != "super")
        if segs[0] in ("crate", "self"):
            base, rest = (() if segs[0] == "crate" else mod), segs[1:]
        elif ups:
            if ups > len(mod):
                return None
            base, rest = mod[:len(mod) - ups], segs[ups:]
        elif in_use and segs[0] in self.children[mod]:
            base, rest = mod, segs
        else:
            return None  # another crate, or a name that a `use` brought in
        for s in rest:
            if base + (s,) not in self.modules:
                break
            base += (s,)
        return base

    def edges(self):
        """{parent: {(child_a, child_b): (file, line, path)}}, the first example of each edge."""
        result = {}
        for mod, segs, rel, line, in_use in self.refs:
            target = self.resolve(mod, segs, in_use)
            if target is None or mod[:len(target)] == target or target[:len(mod)] == mod:
                continue  # not this crate, or an ancestor or descendant
            k = next(k for k in range(len(mod)) if mod[k] != target[k])
            example = (rel, line, "::".join(segs))
            result.setdefault(mod[:k], {}).setdefault((mod[k], target[k]), example)
        return result


def shortest_cycles(succ):
    """For each edge a -> b on a cycle, the shortest cycle through it, from its smallest node."""
    found = set()
    for a, b in sorted((a, b) for a in succ for b in succ[a]):
        prev, queue = {b: b}, [b]  # breadth first from b, back to a
        while queue and a not in prev:
            v = queue.pop(0)
            for w in sorted(succ.get(v, ())):
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        if a in prev:
            path = [a]
            while path[-1] != b:
                path.append(prev[path[-1]])
            cyc = [a] + path[:0:-1]  # a -> b -> .. (back to a)
            k = cyc.index(min(cyc))
            found.add(tuple(cyc[k:] + cyc[:k + 1]))
    return sorted(found, key=lambda c: (len(c), c))


def report(crate):
    lines = []
    for parent, edges in sorted(crate.edges().items()):
        succ = {}
        for a, b in edges:
            succ.setdefault(a, set()).add(b)
        for cyc in shortest_cycles(succ):
            hops = "; ".join("%s:%d uses %s" % edges[e] for e in zip(cyc, cyc[1:]))
            names = " -> ".join("::".join(parent + (m,)) for m in cyc)
            lines.append(f"{crate.src}: {names} ({hops})")
    return lines


def main(args):
    if not args:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    total, lines = 0, []
    for src in args:
        src = os.path.normpath(src)
        if not any(os.path.isfile(os.path.join(src, r)) for r in ("lib.rs", "main.rs")):
            print(f"module-cycles: {src}: no lib.rs or main.rs", file=sys.stderr)
            return 2
        crate = Crate(src)
        crate.load()
        total += len(crate.modules)
        lines += report(crate)
    for line in lines:
        print(line)
    if lines:
        print(f"module-cycles: {len(lines)} cycles in {total} modules", file=sys.stderr)
        return 1
    print(f"module-cycles: no cycles in {total} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
