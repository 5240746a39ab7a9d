"""The `lit-llm` command: its subcommands (`commands`), LightningCLI for `fit`/`validate`/`test` (`trainer`), run
folders (`runs`) and the stage chain (`pipeline`)."""

from __future__ import annotations

from typing import Any


def main(argv: list[str] | None = None) -> Any:
    """`lit-llm` (lit_llm.cli.commands.main); kept here for console scripts installed before the CLI moved."""
    from lit_llm.cli.commands import main as run

    return run(argv)
