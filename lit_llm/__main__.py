"""`python -m lit_llm` is the `lit-llm` command."""

from lit_llm.cli.commands import main

main()
