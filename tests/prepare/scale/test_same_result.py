"""The executor path keeps the in-process path's documents, counts, tokenizer and tokens (issue 20, items 2-4)."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("datatrove")

from lit_llm.data.pretrain import PretrainDataModule  # noqa: E402
from lit_llm.prepare.run import prepare  # noqa: E402
from tests.prepare.scale.helpers import config, counts, rejected, tokens  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("same")
    inproc = prepare(config(root / "inproc"), progress=False)
    local = prepare(config(root / "local", executor={"type": "local", "tasks": 4, "workers": 2}), progress=False)
    return root, inproc, local


def test_the_same_documents_are_kept_with_the_same_counts(runs):
    root, inproc, local = runs
    assert counts(local) == counts(inproc)
    assert local["documents_in"] == 2000
    assert local["documents_in"] == local["documents_out"] + sum(local["removed_by"].values())
    filtered = counts(inproc)  # every stage removes something on this corpus, so the comparison has teeth
    assert inproc["removed_by"]["exact_duplicate"] > 20 and inproc["removed_by"]["near_duplicate"] > 0
    assert len([k for k in inproc["removed_by"] if k.startswith("rule:")]) >= 4, filtered
    # Rejected documents by id, with stage, reason and the document kept in their place: the kept ones are the rest.
    assert rejected(root / "local") == rejected(root / "inproc")
    assert len(rejected(root / "local")) == 2000 - local["documents_out"]


def test_the_tokenizer_and_the_token_stream_are_the_same(runs):
    root, _, local = runs
    assert (root / "local" / "tokenizer.json").read_bytes() == (root / "inproc" / "tokenizer.json").read_bytes()
    for split in ("train", "val"):
        assert np.array_equal(tokens(root / "local", split), tokens(root / "inproc", split))
    # One shard per task, each with its sidecar naming the tokenizer beside the folder.
    shards = sorted(p.name for p in (root / "local" / "train").glob("*.bin"))
    assert shards == ["00000.bin", "00001.bin", "00002.bin", "00003.bin"]
    meta = json.loads((root / "local" / "train" / "00002.json").read_text())
    assert meta["tokenizer"] == "../tokenizer.json" and meta["tokenizer_sha256"]
    assert [s["file"] for s in local["shards"]["train"]] == [f"train/{name}" for name in shards]


def test_stats_merge_every_task_and_name_the_executor(runs):
    root, inproc, local = runs
    assert local["executor"]["type"] == "local" and local["executor"]["tasks"] == 4
    assert local["config_hash"] == inproc["config_hash"]  # the same config and inputs, run elsewhere
    assert local["splits"]["train"]["num_documents"] == inproc["splits"]["train"]["num_documents"]
    per_task = [json.loads((root / "local" / "logs" / "process" / "stats" / f"{r:05d}.json").read_text())
                for r in range(4)]
    rule_totals = {}
    for task in per_task:
        for block in task:
            for label, value in block["stats"].items():
                if label.startswith("dropped_rule:"):
                    total = value["total"] if isinstance(value, dict) else value  # datatrove writes 0 as a bare int
                    rule_totals[label[8:]] = rule_totals.get(label[8:], 0) + total
    rule_totals = {k: v for k, v in rule_totals.items() if v}
    assert rule_totals == {k: v for k, v in inproc["removed_by"].items() if k.startswith("rule:")}


def test_the_shards_train_without_a_merge_step(runs):
    root, _, _ = runs
    sharded = PretrainDataModule(data_dir=str(root / "local"), train_file="train", val_file="val", block_size=32,
                                 batch_size=4, sampling="sequential")
    single = PretrainDataModule(data_dir=str(root / "inproc"), block_size=32, batch_size=4, sampling="sequential")
    for dm in (sharded, single):
        dm.setup("fit")
    a, b = next(iter(sharded.train_dataloader())), next(iter(single.train_dataloader()))
    assert torch_equal(a["input_ids"], b["input_ids"])
    assert len(sharded.train_dataloader()) == len(single.train_dataloader())


def torch_equal(a, b) -> bool:
    return bool((a == b).all()) and a.shape == b.shape


def test_a_second_run_is_up_to_date(runs):
    root, _, _ = runs
    again = prepare(config(root / "local", executor={"type": "local", "tasks": 4, "workers": 2}), progress=False)
    assert again.get("up_to_date") is True


def test_local_files_are_split_by_file_with_bad_records_counted(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    texts = [f"Document number {i} tells of a fox and a hen who walked to the river every day of the week."
             for i in range(60)]
    for f in range(5):
        lines = [json.dumps({"text": t}) for t in texts[f * 12:(f + 1) * 12]]
        if f == 3:
            lines.insert(2, "{not json")
        (data / f"part-{f}.jsonl").write_text("\n".join(lines) + "\n")
    common = dict(sources=[str(data)], val_fraction=0.1)
    a = prepare(config(tmp_path / "a", **common), progress=False)
    b = prepare(config(tmp_path / "b", executor={"type": "local", "tasks": 3, "workers": 1}, **common),
                progress=False)
    assert counts(a) == counts(b)
    assert b["sources"]["bad_records"] == 1 and b["sources"]["files"] == 5
    assert b["documents_in"] == 61 and b["documents_in"] == b["documents_out"] + sum(b["removed_by"].values())
    assert np.array_equal(tokens(tmp_path / "a", "train"), tokens(tmp_path / "b", "train"))


def test_the_cli_takes_the_executor_block_from_flags(tmp_path, capsys):
    from lit_llm.cli.commands import prepare_command

    path = tmp_path / "data.yaml"
    path.write_text(json.dumps({"sources": ["builtin:600"], "output_dir": str(tmp_path / "out"),
                                "tokenizer": {"vocab_size": 400}, "filters": {"min_chars": 60}}))
    prepare_command(["--config", str(path), "--executor.type", "local", "--executor.tasks", "3",
                     "--executor.workers", "1", "--progress", "false"])
    printed = capsys.readouterr().out
    assert "train/ (3 shards)" in printed
    stats = json.loads((tmp_path / "out" / "prepare_stats.json").read_text())
    assert stats["executor"]["tasks"] == 3 and stats["documents_in"] == 600
    assert sorted(p.name for p in (tmp_path / "out" / "train").glob("*.bin")) == ["00000.bin", "00001.bin",
                                                                                  "00002.bin"]
