"""The package's layers import downward only (docs/design.md §7): every `blt` import of a module, at the top
or inside a function, names a module of the same or a lower layer; `import blt.data` loads no model."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import blt

PACKAGE = Path(blt.__file__).parent

# Lowest first. A module belongs to the longest prefix listed; `blt` itself (its lazy __init__) is the top.
LAYERS = [
    ["blt.errors", "blt.fileio", "blt.tokenizer", "blt.config", "blt.version", "blt.allocator", "blt.viz"],
    ["blt.data"],
    ["blt.model"],
    ["blt.patching"],
    ["blt.baselines"],
    ["blt.train.checkpoint", "blt.run", "blt.interop"],
    ["blt.generation"],
    ["blt.train", "blt.train.objectives"],
    ["blt.evaluate", "blt.flops"],
    ["blt.pipelines"],
    ["blt.bench"],
    ["blt.commands", "blt.cli", "blt.__main__"],
]


def layer_of(module: str) -> int:
    if module == "blt":
        return len(LAYERS)
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[1])):
                best = (rank, prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer of tests/test_layers.py; add it")
    return best[0]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every `blt` import in the file, absolute or relative, at any depth."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "blt"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "blt":
                # `from blt.x import y` may import the submodule blt.x.y: judge by it when it is one
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").is_file() or \
                        (PACKAGE.parent / Path(*sub.split("."))).is_dir()
                    found.append((node.lineno, sub if is_module else target))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in MODULES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_go_downward(path):
    name = module_name(path)
    if name == "blt":  # the lazy top-level names may come from anywhere
        return
    rank = layer_of(name)
    upward = [f"line {line}: {target} (layer {layer_of(target)})" for line, target in imports(path)
              if layer_of(target) > rank]
    assert not upward, f"{name} (layer {rank}) imports upward: {upward}"


def test_importing_the_data_layer_loads_no_model():
    code = ("import sys, blt.data, blt.config; "
            "print(sorted(m for m in sys.modules if m.startswith(('blt.model', 'blt.patching', 'blt.train', "
            "'blt.run', 'blt.generation', 'blt.baselines', 'blt.evaluate'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"import blt.data loaded {out}"


def test_top_level_names_still_resolve():
    for name in blt.__all__:
        assert getattr(blt, name) is not None, name
    importlib.import_module("blt.generation")  # a submodule import binds its name in the package: none may
    # shadow a name of the API

    assert blt.load.__module__ == "blt.run" and blt.generate.__module__ == "blt.generation"
    assert not set(blt.__all__) & {path.stem for path in PACKAGE.iterdir()} - {"patching"}
