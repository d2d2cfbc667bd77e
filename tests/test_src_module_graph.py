"""The Rust modules of src/ depend on each other without cycles.

A cycle (a uses b, b uses a) means neither can be read, tested or changed alone.
Each file of src/ is one module (``src/models/mixed.rs`` is
``executor::bridge``, ``src/executor/mod.rs`` is ``executor``); a file depends on
the modules its ``use crate::…`` items and ``crate::…::`` paths name, resolved to
the longest module path that exists. ``super::`` paths count too. A parent's
``mod child;`` declaration is not a dependency: it only says where the child is.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

USE_BLOCK = re.compile(r"\buse\s+(crate|super)::([^;]+);", re.DOTALL)
INLINE_PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def module_of(path: Path, root: Path) -> tuple[str, ...]:
    parts = path.relative_to(root).with_suffix("").parts
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def expand_use(tree: str) -> Iterable[list[str]]:
    """``a::{b, c::{d, e}}`` gives ``[a, b]``, ``[a, c, d]``, ``[a, c, e]``."""
    tree = tree.strip()
    brace = tree.find("{")
    if brace < 0:
        yield [p for p in re.split(r"\s*::\s*", tree.split(" as ")[0].strip()) if p]
        return
    head = [p for p in re.split(r"\s*::\s*", tree[:brace].strip()) if p]
    inner = tree[brace + 1 : tree.rindex("}")]
    depth, start, items = 0, 0, []
    for i, ch in enumerate(inner):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(inner[start:i])
            start = i + 1
    items.append(inner[start:])
    for item in items:
        if item.strip():
            for tail in expand_use(item):
                yield head + [p for p in tail if p != "self"]


def resolve(path: list[str], modules: set[tuple[str, ...]]) -> tuple[str, ...] | None:
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in modules:
            return tuple(path[:n])
    return None


def module_graph(root: Path) -> dict[tuple[str, ...], set[tuple[str, ...]]]:
    files = {module_of(p, root): p for p in sorted(root.rglob("*.rs"))}
    modules = set(files)
    graph: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in modules}
    for module, path in files.items():
        text = COMMENT.sub("", path.read_text(encoding="utf-8"))
        # A file's own `mod tests` is part of it; nothing to separate.
        paths: list[tuple[str, list[str]]] = []
        for anchor, tree in USE_BLOCK.findall(text):
            paths += [(anchor, p) for p in expand_use(tree)]
        for anchor, rest in INLINE_PATH.findall(USE_BLOCK.sub("", text)):
            paths.append((anchor, rest.strip(":").split("::")))
        is_mod_rs = path.stem == "mod" or path.name == "lib.rs"
        for anchor, parts in paths:
            if anchor == "crate":
                full = parts
            else:
                # `super` of models/mixed.rs is executor; of executor/mod.rs, the crate.
                base = list(module) if is_mod_rs else list(module[:-1])
                while parts and parts[0] == "super":
                    base, parts = base[:-1], parts[1:]
                full = base[:-1] + parts if is_mod_rs else base + parts
            target = resolve(full, modules)
            if target is not None and target != module:
                graph[module].add(target)
    return graph


def find_cycles(graph: dict[tuple[str, ...], set[tuple[str, ...]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[tuple[str, ...], int] = {}
    low: dict[tuple[str, ...], int] = {}
    stack: list[tuple[str, ...]] = []
    on_stack: set[tuple[str, ...]] = set()
    cycles: list[list[str]] = []

    def visit(v: tuple[str, ...]) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append("::".join(w) or "crate")
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_src_modules_have_no_cycle() -> None:
    cycles = find_cycles(module_graph(SRC))
    assert not cycles, "modules in a dependency cycle: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_graph_finds_a_cycle_and_only_a_cycle(tmp_path: Path) -> None:
    (tmp_path / "lib.rs").write_text("mod a;\nmod b;\nmod c;\nmod d;\n")
    (tmp_path / "a.rs").write_text("use crate::{b::Thing, c};\n// use crate::d::Ignored;\n")
    (tmp_path / "b.rs").write_text("fn f() { crate::a::g(); }\n")
    (tmp_path / "c.rs").write_text("use crate::d::{self, E as F};\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "mod.rs").write_text("pub mod e;\nuse e::X;\n")
    (tmp_path / "d" / "e.rs").write_text("use super::Y;\n")
    graph = module_graph(tmp_path)
    assert graph[("a",)] == {("b",), ("c",)}
    assert graph[("b",)] == {("a",)}
    assert graph[("c",)] == {("d",)}
    assert graph[("d", "e")] == {("d",)}
    assert find_cycles(graph) == [["a", "b"]]


def test_the_real_graph_is_read() -> None:
    graph = module_graph(SRC)
    assert ("service",) in graph[("connection",)]
    assert ("events",) in graph[("service",)]
