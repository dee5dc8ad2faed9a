"""The layout's rules, checked from the source: which package may import which.

Read statically (ast), so the check needs no imports of its own and runs in milliseconds. Every
import counts, at module level or inside a function; only ``if TYPE_CHECKING:`` and
``if __name__ == "__main__":`` blocks are left out of the circle check (never run on import).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("coordinator", "frameproof", "render_node", "verifier")
# Libraries that do I/O or need a runtime the domain must not assume.
IO_LIBRARIES = ("grpc", "grpc_health", "grpc_reflection", "sqlalchemy", "sqlmodel", "bpy",
                "solana", "solders", "psycopg2", "starlette", "uvicorn")
# sqlite3 is not listed: diagnostics loads it to read its allocator, not to query.
SQL_LIBRARIES = ("sqlalchemy", "sqlmodel", "psycopg2")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (or module.name for `from module import name`)
    line: int
    guarded: bool  # under TYPE_CHECKING or __main__


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> Iterator[Path]:
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if "v1" not in path.relative_to(REPO).parts[:2]:  # generated gRPC code
                yield path


def _never_imported_lines(tree: ast.AST) -> set[int]:
    """Lines under `if TYPE_CHECKING:` (never run) or `if __name__ == "__main__":` (run as a
    script, not when imported): what they import is no import-time dependency."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        test = ast.unparse(node.test) if isinstance(node, ast.If) else ""
        if "TYPE_CHECKING" in test or "__main__" in test:
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    source = module_name(path)
    is_package = path.name == "__init__.py"
    guarded = _never_imported_lines(tree)
    found: list[Import] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = source.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            found.append(Import(source, target, node.lineno, node.lineno in guarded))
    return found


ALL_IMPORTS = [imp for path in source_files() for imp in imports_of(path)]
MODULES = {module_name(path) for path in source_files()}


def resolve(target: str) -> str | None:
    """The first-party module an import loads (`a.b.name` -> `a.b` when name is no module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def offenders(source_package: str, forbidden: tuple[str, ...], *,
              allowed_sources: tuple[str, ...] = ()) -> list[str]:
    return [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in ALL_IMPORTS
        if in_package(imp.source, source_package)
        and not any(in_package(imp.source, allowed) for allowed in allowed_sources)
        and any(in_package(imp.target, bad) for bad in forbidden)
    ]


def test_the_check_sees_the_tree() -> None:
    """A scan that finds nothing would pass every rule below: make sure it reads real code."""
    assert "coordinator.domain.states" in MODULES and "verifier.judge" in MODULES
    assert any(imp.target.startswith("coordinator.domain") for imp in ALL_IMPORTS)


def test_domain_is_plain_python() -> None:
    """The farm's rules import no gRPC, SQL, chain client or Blender, and nothing of the
    coordinator outside the domain: they can be read, tested and reused without any of it."""
    assert offenders("coordinator.domain", IO_LIBRARIES) == []
    outside = [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in ALL_IMPORTS
        if in_package(imp.source, "coordinator.domain")
        and in_package(imp.target, "coordinator")
        and not in_package(imp.target, "coordinator.domain")
    ]
    assert outside == []


def test_coordinator_imports_neither_node_nor_verifier() -> None:
    """It starts the verifier as a process (`python -m verifier.cli`), never imports it."""
    assert offenders("coordinator", ("verifier", "render_node")) == []


def test_node_and_verifier_use_the_client_library_only() -> None:
    assert offenders("render_node", ("coordinator", "verifier")) == []
    assert offenders("verifier", ("coordinator", "render_node")) == []


def test_client_library_depends_on_no_service() -> None:
    """`frameproof` is what creators, nodes and verifiers share. Two tools are the exception:
    the config-docs generator reads every CLI's parser, and LocalFarm starts a whole farm."""
    allowed = ("frameproof.config_docs", "frameproof.localfarm")
    assert offenders("frameproof", ("coordinator", "render_node", "verifier"),
                     allowed_sources=allowed) == []


# A handle's type and the database's errors are not SQL: servicers and sweeps may name them
# (a Connection: one transaction handed from store call to store call, as DeliverTasks does).
SQL_HANDLES = ("sqlalchemy.engine.Engine", "sqlalchemy.engine.Connection", "sqlalchemy.exc")


def test_sql_only_in_storage() -> None:
    """Queries are built in `coordinator.storage` only; elsewhere the code calls its stores."""
    building = [
        f"{imp.source}:{imp.line} imports {imp.target}"
        for imp in ALL_IMPORTS
        if any(in_package(imp.target, lib) for lib in SQL_LIBRARIES)
        and not any(in_package(imp.target, handle) for handle in SQL_HANDLES)
        and not in_package(imp.source, "coordinator.storage")
    ]
    assert building == []


def test_no_import_circles() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for imp in ALL_IMPORTS:
        target = resolve(imp.target)
        if target and target != imp.source and not imp.guarded:
            graph[imp.source].add(target)
    assert strongly_connected(graph) == []


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, sizes above one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups
