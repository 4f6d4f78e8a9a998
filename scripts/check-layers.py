#!/usr/bin/env python3
"""Checks the layering of a Rust crate's modules: every file imports only
from its own layer or the layers below it, and the graph of imports between
files has no cycle.

    scripts/check-layers.py [CRATE_SRC_DIR]      (default: runtime/src)

A file's layer is its top folder under the source dir (LAYERS below); the
crate root (lib.rs) sits above every layer. An import is any path that
starts with `crate::`, `super::` or `self::`, in a `use` tree or in code:
comments and string literals are ignored, inline modules (`mod tests { .. }`)
are followed so that `super::` means what the compiler means. A path is
resolved to the file of the longest module prefix that exists; a name that
a `mod.rs` re-exports (`pub use child::Name`) resolves to the file it comes
from. Declaring a module (`mod child;`) is not an import.

Exit status 0 when clean; 1 with one line per upward import and per cycle
otherwise; 2 on bad usage. `--self-test` checks the checker on a made-up
tree (an upward import and a cycle must both be caught).
"""

import os
import re
import sys
import tempfile

LAYERS = ["sys", "kernel", "engine", "services", "api", "tools"]
ROOT_LAYER = len(LAYERS)  # lib.rs: above everything

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    """Blanks out comments, string and char literals, keeping newlines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(' ""' + "\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or (c == "'" and re.match(r"'\\(x..|u\{[0-9a-fA-F]+\})'", text[i:i + 12])):
            m = re.match(r"'(\\x..|\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            out.append("' '")
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(rel):
    """The module path (a tuple) of a file relative to the source dir."""
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def layer_of(rel):
    top = rel.split("/")[0]
    if top in LAYERS:
        return LAYERS.index(top)
    return ROOT_LAYER


def expand_use_tree(tree):
    """`a::{b, c::{d, e as f}, self}` -> ['a::b', 'a::c::d', 'a::c::e', 'a']."""
    tree = re.sub(r"\s+as\s+" + IDENT, "", tree)
    tree = re.sub(r"\s+", "", tree)
    results = []

    def walk(prefix, s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        parts.append(cur)
        for part in parts:
            if not part:
                continue
            m = re.match(r"^(.*?)\{(.*)\}$", part)
            if m:
                head = m.group(1).rstrip(":")
                walk(prefix + ([head] if head else []), m.group(2))
            else:
                if part == "self":
                    results.append("::".join(prefix))
                elif part != "*":
                    results.append("::".join(prefix + [part]))
                else:
                    results.append("::".join(prefix))

    walk([], tree)
    return [r for r in results if r]


def scan(text):
    """Yields (inline-module path inside the file, path string, is_pub_use)."""
    text = strip_comments_and_strings(text)
    # Track inline modules by brace depth.
    stack = []  # (name, depth at which it closes)
    depth = 0
    tokens = re.finditer(
        r"(?P<mod>\bmod\s+(?P<name>" + IDENT + r")\s*\{)"
        r"|(?P<use>\b(?P<pub>pub(\([^)]*\))?\s+)?use\s+(?P<tree>[^;]+);)"
        r"|(?P<path>\b(?:crate|super|self)(?:::(?:" + IDENT + r"|\*))+)"
        r"|(?P<open>\{)|(?P<close>\})",
        text,
    )
    for t in tokens:
        if t.group("mod"):
            depth += 1
            stack.append((t.group("name"), depth))
        elif t.group("open"):
            depth += 1
        elif t.group("close"):
            if stack and stack[-1][1] == depth:
                stack.pop()
            depth -= 1
        elif t.group("use"):
            inner = tuple(name for name, _ in stack)
            for path in expand_use_tree(t.group("tree")):
                yield inner, path, bool(t.group("pub")) and not inner
        elif t.group("path"):
            inner = tuple(name for name, _ in stack)
            yield inner, t.group("path"), False


class Crate:
    def __init__(self, src):
        self.src = src
        self.files = {}  # rel -> text
        for root, _, names in os.walk(src):
            for name in names:
                if name.endswith(".rs"):
                    path = os.path.join(root, name)
                    rel = os.path.relpath(path, src)
                    with open(path, encoding="utf-8") as f:
                        self.files[rel] = f.read()
        self.modules = {module_of(rel): rel for rel in self.files}
        self.reexports = {rel: {} for rel in self.files}  # rel -> name -> path tuple
        for rel, text in self.files.items():
            here = module_of(rel)
            for inner, path, is_pub in scan(text):
                if is_pub:
                    absolute = self.absolute(here, (), path)
                    if absolute:
                        self.reexports[rel][absolute[-1]] = absolute

    def absolute(self, here, inner, path):
        """The absolute module path of `path` as seen from inside `here`
        (and its inline modules `inner`); None for other crates' paths."""
        parts = path.split("::")
        module = list(here) + list(inner)
        if parts[0] not in ("crate", "self", "super"):
            # A 2018-edition relative path: a child module of this one.
            if tuple(module + parts[:1]) not in self.modules:
                return None
            parts = ["self"] + parts
        if parts[0] == "crate":
            base, rest = [], parts[1:]
        else:
            base = module
            rest = parts
            while rest and rest[0] in ("self", "super"):
                if rest[0] == "super":
                    if not base:
                        return None
                    base = base[:-1]
                rest = rest[1:]
        return tuple(base + [p for p in rest if p != "*"])

    def resolve(self, absolute, seen=None):
        """The file an absolute item path lives in (following re-exports)."""
        for cut in range(len(absolute), -1, -1):
            module = absolute[:cut]
            if module in self.modules:
                rel = self.modules[module]
                rest = absolute[cut:]
                if rest and rest[0] in self.reexports[rel]:
                    target = self.reexports[rel][rest[0]] + rest[1:]
                    seen = seen or set()
                    if target not in seen and target != absolute:
                        seen.add(target)
                        return self.resolve(target, seen)
                return rel
        return None

    def edges(self):
        for rel, text in self.files.items():
            here = module_of(rel)
            for inner, path, _ in scan(text):
                absolute = self.absolute(here, inner, path)
                if absolute is None:
                    continue
                target = self.resolve(absolute)
                if target and target != rel:
                    yield rel, target, "::".join(("crate",) + absolute)


def cycles(graph):
    """Strongly connected components with more than one file (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src):
    crate = Crate(src)
    problems = []
    graph = {}
    seen = set()
    for rel, target, path in crate.edges():
        graph.setdefault(rel, set()).add(target)
        if layer_of(rel) < layer_of(target) and (rel, target) not in seen:
            seen.add((rel, target))
            problems.append(
                f"upward import: {rel} (layer {LAYERS[layer_of(rel)] if layer_of(rel) < ROOT_LAYER else 'root'}) "
                f"uses {path} from {target} (layer {LAYERS[layer_of(target)] if layer_of(target) < ROOT_LAYER else 'root'})"
            )
    for comp in cycles(graph):
        problems.append("import cycle between files: " + " <-> ".join(comp))
    return crate, problems


def self_test():
    files = {
        "lib.rs": "mod sys; mod kernel; mod engine;\npub use engine::Thing;\n",
        "sys/mod.rs": "pub fn raw() {}\n",
        "kernel/mod.rs": "pub mod a; pub mod b;\nuse crate::sys::raw;\n",
        "kernel/a.rs": "use super::b::B; // crate::engine::Thing in a comment is fine\npub struct A;\n",
        "kernel/b.rs": 'pub struct B;\nconst S: &str = "crate::engine::Thing";\n',
        "engine/mod.rs": "use crate::kernel::{a::A, b::B};\npub struct Thing;\n#[cfg(test)]\nmod tests { use super::Thing; }\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in files.items():
            os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
            with open(os.path.join(tmp, rel), "w") as f:
                f.write(text)
        _, problems = check(tmp)
        assert problems == [], f"clean tree reported: {problems}"
        # An upward import: kernel -> engine.
        with open(os.path.join(tmp, "kernel/b.rs"), "a") as f:
            f.write("use crate::engine::Thing;\n")
        _, problems = check(tmp)
        assert any(p.startswith("upward import: kernel/b.rs") for p in problems), problems
        # A cycle within one layer: a -> b -> a.
        with open(os.path.join(tmp, "kernel/b.rs"), "w") as f:
            f.write("pub struct B;\nfn f() -> super::a::A { super::a::A }\n")
        _, problems = check(tmp)
        assert problems == ["import cycle between files: kernel/a.rs <-> kernel/b.rs"], problems
    print("check-layers self-test: ok")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if len(argv) > 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = argv[1] if len(argv) == 2 else os.path.join(os.path.dirname(__file__), "..", "runtime", "src")
    crate, problems = check(src)
    if problems:
        for p in problems:
            print(p)
        print(f"check-layers: {len(problems)} problem(s) in {src}", file=sys.stderr)
        return 1
    per_layer = {}
    for rel in crate.files:
        name = LAYERS[layer_of(rel)] if layer_of(rel) < ROOT_LAYER else "root"
        per_layer[name] = per_layer.get(name, 0) + 1
    summary = ", ".join(f"{name} {per_layer.get(name, 0)}" for name in LAYERS + ["root"])
    print(f"check-layers: ok ({summary} files; no upward import, no cycle)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
