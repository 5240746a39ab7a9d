"""The package is layered: every import (module level or inside a function) points down the layers, and no
module imports itself back through others. Read from the source with `ast`, so a lazy import counts too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lit_llm"

# Lowest first. A module may import its own layer and the ones below it, never one above.
LAYERS = [
    {"errors", "atomic", "tasks"},
    {"text", "prepare"},
    {"losses", "rl", "rlvr", "metrics", "lora", "model", "generation"},
    {"checkpoint", "convert", "loggers", "callbacks"},
    {"data", "rewards", "rollout"},
    {"chat", "stages"},
    {"eval"},
    {"cli", "__main__"},
]
# Pairs inside one layer that must not import each other at all, in the direction given.
FORBIDDEN = {
    ("prepare", "text"): False,  # prepare uses the tokenizer
    ("text", "prepare"): True,
    ("model", "checkpoint"): True,
    ("generation", "checkpoint"): True,
    ("data", "rollout"): True,
    ("data", "rewards"): True,
    ("rewards", "rollout"): True,
    ("stages", "chat"): True,
}


def group(module: str) -> str:
    """The layer key of `lit_llm.a.b`: `a` (a package or a top-level module)."""
    return module.split(".")[1] if module.count(".") else module


def layer(key: str) -> int:
    for i, names in enumerate(LAYERS):
        if key in names:
            return i
    raise AssertionError(f"lit_llm.{key} is in no layer of tests/test_layers.py: add it where it belongs")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The lit_llm modules `name` imports (a `from pkg import sub` of a submodule counts as that submodule)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.startswith("lit_llm"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("lit_llm"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m != name}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_every_import_points_down_the_layers(graph):
    wrong = []
    for name, targets in graph.items():
        if name == "lit_llm":
            continue  # the package root only maps names to modules, lazily
        for target in targets:
            a, b = group(name), group(target)
            if a == b or target == "lit_llm":
                continue
            if layer(b) > layer(a) or FORBIDDEN.get((a, b)):
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_circles(graph):
    seen, stack, cycles = set(), [], []

    def visit(node: str) -> None:
        if node in stack:
            cycles.append(stack[stack.index(node) :] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target in graph and target != "lit_llm":
                visit(target)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_stage_extends_another():
    from lightning.pytorch import LightningModule

    import lit_llm.stages as stages
    from lit_llm.stages.base import Stage

    for name in stages.__all__:
        cls = getattr(stages, name)
        if cls is Stage:
            continue
        assert cls.__bases__ == (Stage,), f"{name} extends {cls.__bases__}, not Stage alone"
    assert Stage.__bases__ == (LightningModule,)


def test_no_data_module_extends_another():
    from lightning.pytorch import LightningDataModule

    import lit_llm.data as data

    names = [name for name in data.__all__ if name.endswith("DataModule")]
    assert len(names) == 4
    for name in names:
        assert getattr(data, name).__bases__ == (LightningDataModule,), name


def test_text_and_preparation_import_without_torch_and_lightning():
    code = ("import sys, lit_llm.text, lit_llm.text.templates, lit_llm.text.conversations, lit_llm.tasks, "
            "lit_llm.prepare.run, lit_llm.prepare.sources; "
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_moved_module_names_its_new_place():
    with pytest.raises(ModuleNotFoundError, match=r"lit_llm\.data\.tasks moved to lit_llm\.tasks"):
        import lit_llm.data.tasks  # noqa: F401


def test_a_style_stored_before_the_package_was_layered_still_loads():
    """Checkpoints written before 0.2 store lit_llm.data.templates.<Style>: loading them must keep working, while a
    user's YAML naming the old module is told where it went."""
    from lit_llm.checkpoint import meta_style
    from lit_llm.errors import ConfigError
    from lit_llm.text.templates import QA, load_style, style_to_dict

    stored = {"class_path": "lit_llm.data.templates.QA", "init_args": {}}
    assert type(meta_style({"prompt_style": stored})) is QA
    assert style_to_dict(meta_style({"prompt_style": stored}))["class_path"] == "lit_llm.text.templates.QA"
    assert meta_style({"model_config": {}}) is None
    with pytest.raises(ConfigError, match=r"lit_llm\.data\.templates moved to lit_llm\.text\.templates"):
        load_style("lit_llm.data.templates.QA")
