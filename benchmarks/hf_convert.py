"""Peak memory of `lit-llm import` and `export` against the checkpoint size.

Builds a random Llama-layout model with `transformers` (about 0.5 GB of fp32 weights by default), saves it as a
Hugging Face folder, then converts it in a fresh process and reads that process's peak resident memory
(`ru_maxrss`). The baseline is the same process importing torch and lit_llm without converting. Memory is
deterministic enough for one round; no timing goes into the headline.

    python benchmarks/hf_convert.py [--layers 8] [--width 1024]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import resource, sys
import torch
from lit_llm.convert.hf import export_hf, import_hf
{action}
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_mib(action: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD.format(action=action)], check=True, capture_output=True, text=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=1024)
    args = parser.parse_args()
    import torch
    import transformers

    from lit_llm.prepare.corpus import generate_corpus
    from lit_llm.text.tokenizer import train_bpe

    with tempfile.TemporaryDirectory() as tmp:
        hf, lit, out = Path(tmp) / "hf", Path(tmp) / "lit", Path(tmp) / "out"
        config = transformers.LlamaConfig(
            vocab_size=32000, hidden_size=args.width, intermediate_size=int(2.75 * args.width),
            num_hidden_layers=args.layers, num_attention_heads=args.width // 64, num_key_value_heads=args.width // 128,
        )  # fmt: skip
        model = transformers.LlamaForCausalLM(config)
        model.save_pretrained(hf)
        train_bpe(generate_corpus(200, seed=0), vocab_size=512).save_pretrained(hf)
        params = sum(p.numel() for p in model.parameters())
        del model
        size = sum(f.stat().st_size for f in hf.glob("*.safetensors")) / 2**20
        baseline = peak_mib("pass")
        imported = peak_mib(f"import_hf({str(hf)!r}, {str(lit)!r})")
        exported = peak_mib(f"export_hf({str(lit)!r}, {str(out)!r})")
        print(f"model: Llama layout, {params / 1e6:.0f}M parameters, torch {torch.__version__}")
        print(f"checkpoint size (safetensors, fp32): {size:.0f} MiB")
        print(f"peak RSS: baseline (torch + lit_llm imported) {baseline:.0f} MiB")
        print(f"peak RSS: import {imported:.0f} MiB (+{imported - baseline:.0f} over baseline)")
        print(f"peak RSS: export {exported:.0f} MiB (+{exported - baseline:.0f} over baseline)")
        worst = max(imported, exported) - baseline
        print(f"headline: peak memory of conversion over the baseline = {worst / size:.2f}x the checkpoint size")


if __name__ == "__main__":
    main()
