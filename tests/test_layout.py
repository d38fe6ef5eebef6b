"""The package layout tells the truth: layers import downwards only, and every DVC stage depends on every
module its command can import (so an edit to any of them reruns the stage)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from conftest import PROJECT

SRC = PROJECT / "src"
LAYERS = ["core", "data", "modelling", "inference", "deployment"]  # each may import those before it


def module_file(name: str) -> Path | None:
    """The source file of module `ampsim.x.y` (a package's __init__.py), or None if it is not one."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imports_of(tree: ast.AST, package: str) -> set[str]:
    """Every ampsim module an AST imports, at any depth (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"relative import in {package}: write `from ampsim...` imports")
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "ampsim":
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if module_file(f"{node.module}.{alias.name}"))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "ampsim")
    return found


def closure(roots: set[str]) -> set[Path]:
    """The files of `roots` and of everything they import, with the packages on the way (and cli.py, which
    runs every command; its other commands' lazy imports do not run)."""
    seen: set[Path] = {SRC / "ampsim" / "cli.py"}
    todo = list(roots)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imports_of(ast.parse(path.read_text()), ".".join(parts[:depth])))
    return seen


def command_imports(subcommand: str) -> set[str]:
    """What `ampsim <subcommand>` imports: the cli module's top level, `main`, the command's function, and
    the cli helpers they call."""
    cli = ast.parse((SRC / "ampsim" / "cli.py").read_text())
    functions = {node.name: node for node in cli.body if isinstance(node, ast.FunctionDef)}
    top = ast.Module(body=[n for n in cli.body if not isinstance(n, ast.FunctionDef)], type_ignores=[])
    found = imports_of(top, "ampsim.cli")
    todo, visited = [f"cmd_{subcommand.replace('-', '_')}", "main"], set()
    assert todo[0] in functions, f"cli.py has no {todo[0]}"
    while todo:
        name = todo.pop()
        if name in visited or name == "build_parser":  # it names every command's function, calls none
            continue
        visited.add(name)
        found |= imports_of(functions[name], "ampsim.cli")
        todo += [n.id for n in ast.walk(functions[name]) if isinstance(n, ast.Name) and n.id in functions]
    return found


def stages() -> dict[str, dict]:
    pipeline = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]
    return {name: stage.get("do", stage) for name, stage in pipeline.items()}


def test_every_stage_depends_on_every_module_its_command_imports():
    for name, stage in stages().items():
        words = stage["cmd"].split()
        assert words[0] == "ampsim", f"stage {name} should call the ampsim command"
        deps = [PROJECT / dep for dep in stage["deps"] if str(dep).startswith("src/")]
        needed = closure(command_imports(words[1]))
        uncovered = sorted(str(path.relative_to(PROJECT)) for path in needed
                           if not any(path == dep or dep in path.parents for dep in deps))
        assert not uncovered, f"stage {name} imports modules its deps leave out: {uncovered}"


def test_no_stage_depends_on_a_layer_it_never_imports():
    """The deps are true in the other direction too: a folder listed is a folder used."""
    for name, stage in stages().items():
        needed = closure(command_imports(stage["cmd"].split()[1]))
        for dep in stage["deps"]:
            path = PROJECT / dep
            if str(dep).startswith("src/") and path.is_dir():
                assert any(path in file.parents for file in needed), f"stage {name} lists {dep} but never imports it"


def test_layers_import_downwards_only():
    package = SRC / "ampsim"
    for layer_index, layer in enumerate(LAYERS):
        allowed = {"ampsim", *(f"ampsim.{lower}" for lower in LAYERS[: layer_index + 1])}
        for path in sorted((package / layer).rglob("*.py")):
            for name in imports_of(ast.parse(path.read_text()), layer):
                parts = name.split(".")
                target = ".".join(parts[:2]) if len(parts) > 1 else "ampsim"
                assert target in allowed or parts[1] not in LAYERS, (
                    f"{path.relative_to(PROJECT)} imports {name}: a lower layer must not import {parts[1]}")
    assert not [p for p in package.glob("*.py") if p.name not in {"__init__.py", "cli.py"}], \
        "modules belong in a layer's folder"
