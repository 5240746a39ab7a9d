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
    """LightningCLI for fit/validate/test (lit_llm.lightning_cli). Lightning is imported here rather than at module
    level, so `lit-llm prepare` starts without it."""
    from lit_llm.lightning_cli import trainer_cli as cli

    return cli(args=args, run=run)


def generate(
    checkpoint: str,
    prompt: str,
    max_new_tokens: int = 100,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int | None = 1337,
    device: str = "auto",
    raw: bool = False,
) -> None:
    """Print samples for a prompt from a lit_llm checkpoint: replies in the checkpoint's prompt style when it was
    trained with one (SFT and later stages), else continuations of the text.

    Args:
        checkpoint: a .ckpt file, or a run folder holding checkpoints/last.ckpt.
        prompt: text to continue (a prompt longer than the context is cut from the left, with a warning).
        max_new_tokens: tokens to generate per sample (at least 1, and fewer than the model's block_size).
        temperature: sampling temperature (>= 0); 0 is greedy.
        top_k: sample among the k most likely tokens (None = all).
        top_p: nucleus sampling mass, in (0, 1].
        num_samples: independent samples to print (at least 1).
        seed: random seed of the sampler.
        device: "auto", "cpu" or "cuda".
        raw: continue the prompt as plain text even when the checkpoint has a prompt style.
    """
    from lit_llm.generation import sample_checkpoint

    texts, replies = sample_checkpoint(
        checkpoint,
        prompt,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        num_samples=num_samples,
        seed=seed,
        device=device,
        raw=raw,
    )
    for i, text in enumerate(texts):
        if num_samples > 1:
            print(f"--- sample {i + 1}")
        print(f"user: {prompt}\nassistant: {text}" if replies else prompt + text)


def prepare_command(argv: list[str]) -> None:
    """`lit-llm prepare --config configs/data/NAME.yaml [--key value ...]`: run the data pipeline."""
    from jsonargparse import ArgumentParser

    from lit_llm.data.prepare import PrepareConfig, prepare
    from lit_llm.data.stats import format_table

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


def evaluate(
    checkpoints: list[str],
    split: str = "test",
    tasks: list[str] | None = None,
    per_task: int = 100,
    prompt_style: str | None = None,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    seed: int = 0,
    device: str = "auto",
    temperature: float = 0.0,
    samples: int = 1,
) -> None:
    """Print each checkpoint's exact-match accuracy (and mean verifier reward) on the built-in verifiable tasks.

    Args:
        checkpoints: lit_llm checkpoints (.ckpt files or run folders), one column each.
        split: task split to ask: "test" (held out from training and validation), "val" or "train".
        tasks: tasks to ask (None: all built-in tasks).
        per_task: prompts per task.
        prompt_style: style to ask in; None uses each checkpoint's own, and alpaca for one without (pretraining).
        max_new_tokens: longest answer.
        batch_size: prompts answered at once.
        seed: seed of the prompts drawn from the split.
        device: "auto", "cpu" or "cuda".
        temperature: 0 answers greedily; above 0, answers are sampled (the same seeds for every checkpoint).
        samples: answers sampled per prompt when temperature > 0; scores average over them.
    """
    import torch

    from lit_llm.eval.tasks import evaluate_checkpoint, format_scores

    if isinstance(checkpoints, str):
        checkpoints = [checkpoints]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    columns = {
        path: evaluate_checkpoint(
            path, split, tasks, per_task, prompt_style, max_new_tokens, batch_size, seed, device=device,
            temperature=temperature, samples=samples,
        )
        for path in checkpoints
    }
    how = "greedy answers"
    if temperature > 0:
        how = f"{samples} answer(s) per prompt sampled at temperature {temperature}"
    print(f"exact match on the {split} split of the built-in tasks ({how}):")
    print(format_scores(columns))
    print("mean verifier reward (1 = exact, partial credit below 0.5):")
    print(format_scores(columns, metric="reward"))


def _report_pairs(stats) -> None:
    print(f"{stats.split}: {stats.summary()}")
    print(f"wrote {stats.output}")


def _function_command(function, prog: str, report=None):
    """A command whose options are a function's typed, documented parameters; `report` prints its result."""

    def run(argv: list[str]) -> None:
        from jsonargparse import auto_cli

        result = auto_cli(function, args=argv, as_positional=False, prog=prog, allow_abbrev=False)
        if report is not None:
            report(result)

    return run


def pipeline_command(argv: list[str]) -> None:
    from lit_llm.pipeline import pipeline_command

    pipeline_command(argv)


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
    "generate": _function_command(generate, "lit-llm generate"),
    "prepare": prepare_command,
    "evaluate": _function_command(evaluate, "lit-llm evaluate"),
    "pairs": _function_command(write_pairs, "lit-llm pairs", report=_report_pairs),
    "chat": _function_command(chat, "lit-llm chat"),
    "compare": _function_command(compare_checkpoints, "lit-llm compare", report=lambda path: print(path.read_text())),
    "report": _function_command(write_report, "lit-llm report", report=lambda path: print(f"wrote {path}")),
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
