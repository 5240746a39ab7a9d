"""lit_llm: a Lightning-native framework from raw text to an aligned language model."""

from __future__ import annotations

import importlib
import importlib.abc
import sys
from typing import Any

__version__ = "0.1.0"
__all__ = ["GPT", "CausalLM", "Config", "PretrainDataModule", "SFTDataModule", "SFTModule", "__version__"]

# Loaded on first use: `lit-llm prepare` and datasets' worker processes need neither torch nor Lightning.
_LAZY = {"GPT": "lit_llm.model", "Config": "lit_llm.model", "CausalLM": "lit_llm.stages",
         "PretrainDataModule": "lit_llm.data", "SFTModule": "lit_llm.stages", "SFTDataModule": "lit_llm.data"}


# Modules that moved when the package was layered (0.2): importing an old name (in Python, or as a class_path or
# reward_function in YAML) fails with one message naming the new place.
MOVED_MODULES = {
    "lit_llm.data.tokenizer": "lit_llm.text.tokenizer",
    "lit_llm.data.templates": "lit_llm.text.templates",
    "lit_llm.data.conversations": "lit_llm.text.conversations",
    "lit_llm.data.tasks": "lit_llm.tasks",
    "lit_llm.data.sources": "lit_llm.prepare.sources",
    "lit_llm.data.corpus": "lit_llm.prepare.corpus",
    "lit_llm.data.drills": "lit_llm.prepare.drills",
    "lit_llm.data.clean": "lit_llm.prepare.clean",
    "lit_llm.data.filters": "lit_llm.prepare.filters",
    "lit_llm.data.dedup": "lit_llm.prepare.dedup",
    "lit_llm.data.shards": "lit_llm.prepare.shards",
    "lit_llm.data.steps": "lit_llm.prepare.steps",
    "lit_llm.data.stats": "lit_llm.prepare.stats",
    "lit_llm.data.prepare": "lit_llm.prepare.run",
    "lit_llm.data.prompts": "lit_llm.data.rl_prompts",
    "lit_llm.stages.rollouts": "lit_llm.rollout.layout",
    "lit_llm.stages.causal_lm": "lit_llm.stages.pretrain",
    "lit_llm.stages.preference": "lit_llm.stages.pairs",
    "lit_llm.stages.ppo_eval": "lit_llm.stages.rl_validation",
    "lit_llm.eval.tasks": "lit_llm.rollout.answers",
    "lit_llm.lightning_cli": "lit_llm.cli.trainer",
    "lit_llm.pipeline": "lit_llm.cli.pipeline",
    "lit_llm.runs": "lit_llm.cli.runs",
}


class _MovedModules(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name in MOVED_MODULES:
            raise ModuleNotFoundError(f"{name} moved to {MOVED_MODULES[name]} (lit_llm 0.2)", name=name)
        return None


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lit_llm' has no attribute {name!r}")
