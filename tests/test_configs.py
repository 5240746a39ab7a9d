"""Every YAML in configs/ parses against the current code (strategy files on top of a stage config, data
pipeline configs through `lit-llm prepare`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lit_llm.cli.commands import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STAGE_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name not in ("strategy", "data", "pipeline"))
DATA_CONFIGS = sorted((CONFIGS / "data").glob("*.yaml"))
STRATEGY_CONFIGS = sorted((CONFIGS / "strategy").glob("*.yaml"))


def _print_config(capsys, *paths: Path) -> str:
    argv = ["fit"]
    for p in paths:
        argv += ["--config", str(p)]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--print_config"])
    assert exc.value.code in (0, None)
    return capsys.readouterr().out


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_stage_config_parses(path, capsys):
    out = _print_config(capsys, path)
    assert "class_path: lit_llm." in out


@pytest.mark.parametrize("path", STRATEGY_CONFIGS, ids=lambda p: p.name)
def test_strategy_config_parses(path, capsys):
    out = _print_config(capsys, CONFIGS / "pretrain" / "gpt2-124m.yaml", path)
    assert "strategy:" in out


@pytest.mark.parametrize("path", DATA_CONFIGS, ids=lambda p: p.name)
def test_data_config_parses(path, capsys):
    from lit_llm.prepare.run import PrepareConfig

    with pytest.raises(SystemExit) as exc:
        main(["prepare", "--config", str(path), "--print_config"])
    assert exc.value.code in (0, None)
    assert "dedup:" in capsys.readouterr().out
    # The loader PretrainDataModule(prepare=PATH) uses accepts the same file.
    assert PrepareConfig.from_yaml(path).sources


def test_there_are_configs():
    assert len(STAGE_CONFIGS) >= 2 and {p.name for p in STRATEGY_CONFIGS} >= {"ddp.yaml", "fsdp.yaml"}
    assert [p.name for p in DATA_CONFIGS] >= ["demo.yaml"]
