"""The import graph of the package modules (replay/, synth/, traces/), read with ast: no cycles,
and every import points down the layers replay -> synth -> traces.

Imports inside functions count: a lazy import is still a dependency, and a circle of them is
still a circle (it only moves the failure to the first call). A module that imports a package
depends on the package's ``__init__``; one that imports ``package.module`` depends on that
module (Python loads the ``__init__`` first, but the ``__init__`` files here import no siblings
that would close a circle: the test would see it).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("traces", "synth", "replay")  # each may import only itself and those before it


def package_modules() -> dict[str, Path]:
    modules = {}
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in its body)."""
    modules = package_modules()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                # `from pkg import module` imports the module; `from module import name` the module
                targets.update(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules
                               else known(source) for alias in node.names)
        targets.discard(None)
        targets.discard(name)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_the_modules_and_their_imports():
    graph = import_graph()
    assert len(graph) > 60
    assert "traces.format" in graph["traces.summary"]  # a plain relative import
    assert "traces.strace_fast" in graph["traces.strace_read"]  # one inside a function
    assert "synth.generate" in graph["replay.commands.synth"]  # an absolute one


def test_no_import_cycles_among_the_package_modules():
    assert cycles(import_graph()) == []


def test_imports_point_one_way_replay_synth_traces():
    layer = {package: rank for rank, package in enumerate(LAYERS)}
    upward = sorted(f"{module} imports {target}"
                    for module, targets in import_graph().items() for target in targets
                    if layer[target.split(".")[0]] > layer[module.split(".")[0]])
    assert upward == []


def test_every_command_module_is_in_the_registry():
    """A module in replay/commands/ defining ``command`` is a command only once COMMANDS lists
    it (no discovery by file name): a forgotten line would hide the command."""
    from replay.commands import COMMANDS

    defining = sorted(path.stem for path in (ROOT / "replay" / "commands").glob("*.py")
                      if "\ndef command(" in path.read_text(encoding="utf-8"))
    registered = sorted(command.callback.__module__.rpartition(".")[2] for command in COMMANDS)
    assert registered == defining
