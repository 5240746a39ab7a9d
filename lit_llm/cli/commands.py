"""The `lit-llm` command: LightningCLI for fit/validate/test, jsonargparse for the other commands."""

from __future__ import annotations

import errno
import re
import sys
from argparse import ArgumentError

from lit_llm.atomic import describe_os_error
from lit_llm.chat import chat
from lit_llm.errors import LitLLMError
from lit_llm.eval.compare import compare_checkpoints
from lit_llm.eval.pairs import write_pairs  # light: no torch or Lightning at import
from lit_llm.eval.report import write_report

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")

USAGE = """usage: lit-llm COMMAND [options]

commands:
  fit        train a stage:           lit-llm fit --config configs/pretrain/tiny.yaml
  validate   evaluate on the val set: lit-llm validate --config CONFIG --ckpt_path CKPT
  test       evaluate on the test set
  generate   sample from a checkpoint: lit-llm generate --checkpoint CKPT --prompt TEXT
  prepare    raw text to token files: lit-llm prepare --config configs/data/demo.yaml
  evaluate   exact match per built-in task: lit-llm evaluate --checkpoints '[runs/pretrain/tiny,runs/sft/tiny]'
  pairs      preference pairs from a model's own answers: lit-llm pairs --checkpoint runs/sft/tiny --output F.jsonl
  chat       talk with a checkpoint in the terminal: lit-llm chat --checkpoint runs/sft/tiny
  compare    checkpoints side by side on held-out prompts: lit-llm compare --checkpoints '[runs/sft/tiny,runs/ppo/tiny]'
  report     plots and a summary of training runs: lit-llm report --runs '[runs/pretrain/tiny,runs/sft/tiny]'
  pipeline   every stage in order, skipping finished ones: lit-llm pipeline --config configs/pipeline/demo.yaml
  import     a local Hugging Face checkpoint to lit_llm: lit-llm import --from HF_DIR --to checkpoints/NAME
  export     a checkpoint to a Hugging Face folder: lit-llm export --checkpoint runs/sft/tiny --to hf/sft-tiny

'lit-llm COMMAND --help' lists a command's options; 'lit-llm fit --print_config' prints a full config.
"""


def trainer_cli(args: list[str] | None = None, run: bool = True):
    """LightningCLI for fit/validate/test (lit_llm.cli.trainer). Lightning is imported here rather than at module
    level, so `lit-llm prepare` starts without it."""
    from lit_llm.cli.trainer import trainer_cli as cli

    return cli(args=args, run=run)


def _print_samples(result: tuple[list[str], bool], options: dict) -> None:
    texts, replies = result
    prompt = options["prompt"]
    for i, text in enumerate(texts):
        if options["num_samples"] > 1:
            print(f"--- sample {i + 1}")
        print(f"user: {prompt}\nassistant: {text}" if replies else prompt + text)


def prepare_command(argv: list[str]) -> None:
    """`lit-llm prepare --config configs/data/NAME.yaml [--key value ...]`: run the data pipeline."""
    from jsonargparse import ArgumentParser

    from lit_llm.prepare.run import PrepareConfig, prepare
    from lit_llm.prepare.stats import format_table

    parser = ArgumentParser(
        prog="lit-llm prepare",
        description="Clean, filter and deduplicate raw text, train a tokenizer and write token files.",
        exit_on_error=False,
        allow_abbrev=False,
    )
    parser.add_argument("--config", action="config", help="a YAML file with the options below")
    parser.add_class_arguments(PrepareConfig, nested_key=None, fail_untyped=True)
    parser.add_argument("--force", type=bool, default=False, help="rerun even if the outputs are up to date")
    parser.add_argument("--progress", type=bool, default=True, help="show progress bars")
    args = parser.parse_args(argv)
    force, progress = args.pop("force"), args.pop("progress")
    args.pop("config", None)
    init = parser.instantiate(args) if hasattr(parser, "instantiate") else parser.instantiate_classes(args)
    config = PrepareConfig(**{name: init[name] for name in PrepareConfig.__dataclass_fields__})
    stats = prepare(config, force=force, progress=progress)
    print(format_table(stats))
    if stats.get("up_to_date"):
        print("outputs are up to date with this config and these inputs; nothing was rerun (--force reruns)")
    print(f"wrote {config.output_dir} (stats: {config.output_dir}/prepare_stats.json)")


def _print_scores(columns: dict, options: dict) -> None:
    from lit_llm.rollout.answers import format_scores

    how = "greedy answers"
    if options["temperature"] > 0:
        how = f"{options['samples']} answer(s) per prompt sampled at temperature {options['temperature']}"
    print(f"exact match on the {options['split']} split of the built-in tasks ({how}):")
    print(format_scores(columns))
    print("mean verifier reward (1 = exact, partial credit below 0.5):")
    print(format_scores(columns, metric="reward"))
    k = options["samples"]
    if k > 1:
        print(f"pass@1 over each prompt's {k} answers (Chen et al.'s unbiased estimator; n = prompts):")
        print(format_scores(columns, metric="pass_at_1", count="prompts"))
        print(f"pass@{k} (share of prompts with an exact answer among their {k}):")
        print(format_scores(columns, metric=f"pass_at_{k}", count="prompts"))


def _report_pairs(stats, options: dict) -> None:
    print(f"{stats.split}: {stats.summary()}")
    print(f"wrote {stats.output}")


def _function_command(function, prog: str, report=None):
    """A command whose options are a library function's own typed, documented parameters (jsonargparse reads its
    signature and docstring, so nothing is declared twice); `report(result, options)` prints its result."""

    def run(argv: list[str]) -> None:
        import importlib

        from jsonargparse import ArgumentParser

        nonlocal function
        if isinstance(function, str):  # "module:function", imported when the command runs (torch is slow to load)
            module, _, name = function.partition(":")
            function = getattr(importlib.import_module(module), name)
        parser = ArgumentParser(prog=prog, exit_on_error=False, allow_abbrev=False,
                                description=(function.__doc__ or "").split("\n\n")[0])  # fmt: skip
        parser.add_argument("--config", action="config", help="a YAML file with the options below")
        parser.add_function_arguments(function, as_positional=False, fail_untyped=True)
        args = parser.parse_args(argv)
        args.pop("config", None)
        options = dict(parser.instantiate(args) if hasattr(parser, "instantiate") else parser.instantiate_classes(args))
        result = function(**options)
        if report is not None:
            report(result, options)

    return run


def pipeline_command(argv: list[str]) -> None:
    from lit_llm.cli.pipeline import pipeline_command as run_steps

    run_steps(argv, runner=main, commands=set(COMMANDS) | set(TRAINER_COMMANDS))


def import_command(argv: list[str]) -> None:
    """`lit-llm import --from HF_DIR --to DIR [--dtype bfloat16] [--overwrite true]`."""
    from jsonargparse import ArgumentParser

    from lit_llm.convert.hf import download, import_hf

    parser = ArgumentParser(prog="lit-llm import", exit_on_error=False, allow_abbrev=False,
                            description="Convert a local Hugging Face checkpoint folder (Llama, Mistral, Qwen2, "
                                        "SmolLM, GPT-2) into a lit_llm checkpoint DIR/last.ckpt for init_from.")
    parser.add_argument("--from", dest="source", type=str, required=True, help="the Hugging Face folder")
    parser.add_argument("--to", dest="output", type=str, required=True, help="folder to write last.ckpt to")
    parser.add_argument("--dtype", type=str | None, default=None, help="cast the weights (float32, bfloat16, ...)")
    parser.add_argument("--hub", type=bool, default=False,
                        help="--from is a Hugging Face Hub repository id to download (the only network access)")
    parser.add_argument("--overwrite", type=bool, default=False, help="replace an existing DIR/last.ckpt")
    args = parser.parse_args(argv)
    source = download(args.source) if args.hub else args.source
    print(f"wrote {import_hf(source, args.output, args.dtype, overwrite=args.overwrite)}")


def export_command(argv: list[str]) -> None:
    """`lit-llm export --checkpoint PATH --to HF_DIR [--overwrite true]`."""
    from jsonargparse import ArgumentParser

    from lit_llm.convert.hf import export_hf

    parser = ArgumentParser(prog="lit-llm export", exit_on_error=False, allow_abbrev=False,
                            description="Write a lit_llm checkpoint as a Hugging Face folder that transformers' "
                                        "AutoModelForCausalLM and AutoTokenizer load.")
    parser.add_argument("--checkpoint", type=str, required=True, help="a .ckpt file or run folder")
    parser.add_argument("--to", dest="output", type=str, required=True, help="the folder to write")
    parser.add_argument("--overwrite", type=bool, default=False,
                        help="replace the model in a folder that is not empty (its weights, config and tokenizer "
                             "files; other files are kept)")  # fmt: skip
    args = parser.parse_args(argv)
    print(f"wrote {export_hf(args.checkpoint, args.output, overwrite=args.overwrite)}")


COMMANDS = {
    "generate": _function_command("lit_llm.rollout.checkpoints:sample_checkpoint", "lit-llm generate",
                                  report=_print_samples),
    "prepare": prepare_command,
    "evaluate": _function_command("lit_llm.rollout.answers:evaluate_checkpoints", "lit-llm evaluate",
                                  report=_print_scores),
    "pairs": _function_command(write_pairs, "lit-llm pairs", report=_report_pairs),
    "chat": _function_command(chat, "lit-llm chat"),
    "compare": _function_command(compare_checkpoints, "lit-llm compare",
                                 report=lambda path, _: print(path.read_text())),
    "report": _function_command(write_report, "lit-llm report", report=lambda path, _: print(f"wrote {path}")),
    "pipeline": pipeline_command,
    "import": import_command,
    "export": export_command,
}


def _config_error_message(exc: Exception) -> str:
    """jsonargparse's explanation without the alternatives that never applied ("Expected a NoneType")."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    noise = r"Expected a <class 'NoneType'>|Subtypes: \[|any of the Union|Given value( type)?: .*Namespace"
    keep = [line for line in lines if not re.search(noise, line)]
    return "invalid configuration:\n" + "\n".join(keep) + "\n(see 'lit-llm COMMAND --help' for the valid keys)"


def main(argv: list[str] | None = None) -> None:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    try:
        if argv[0] in COMMANDS:
            COMMANDS[argv[0]](argv[1:])
        elif argv[0] in TRAINER_COMMANDS:
            # Passing sys.argv explicitly as well would make LightningCLI warn about duplicated args.
            trainer_cli(args=None if from_command_line else argv)
        else:
            print(USAGE, file=sys.stderr)
            print(f"lit-llm: error: unknown command {argv[0]!r}", file=sys.stderr)
            raise SystemExit(2)
    except LitLLMError as exc:
        print(f"lit-llm: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ArgumentError as exc:
        print(f"lit-llm: error: {_config_error_message(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as exc:
        # A full disk or a read-only folder met by code that writes without lit_llm.atomic (loggers, libraries).
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        print(f"lit-llm: error: {describe_os_error(exc, exc.filename or 'a file')}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as exc:
        # A stage or data module that rejects its arguments while LightningCLI instantiates it: jsonargparse
        # reports the ConfigError as one failed alternative of the class's Union type.
        if "Does not validate against any of the Union subtypes" not in str(exc):
            raise
        print(f"lit-llm: error: {_config_error_message(exc)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
