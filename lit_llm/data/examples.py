"""What the SFT, preference and prompt data modules do alike, held by each as one part: `self.examples`, an
`ExampleStore`.

The store knows what the examples are made with (the data module's own tokenizer and prompt style, else those the
stage hands over in `connect`), when they can be built (in `setup` when no argument they need is missing, else on
`connect`, else never: asking for them then names what is missing), builds them once (the module's encoder over
its `RecordSet`) and deals them to loaders. What differs stays with each data module: its encoder, its collate,
its own checks of the model's lengths, and its layout (`block_size`, `batch_shape`), which its `connect` tells back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any, Generic, TypeVar

from torch.utils.data import DataLoader

from lit_llm.data.connect import DataInfo, DataSpec, load_tokenizer, not_connected
from lit_llm.data.loading import example_loader
from lit_llm.data.records import RecordSet, SFTStats, Split
from lit_llm.text.templates import PromptStyle, load_style
from lit_llm.text.tokenizer import Tokenizer

T = TypeVar("T")


class ExampleStore(Generic[T]):
    """A data module's examples, what they are made with, and their loaders.

    Args:
        records: the data module's records and how they become its train and val examples.
        encode: `encode(records, stats)`, the examples of one split's `(location, record)` pairs: the data module's
            encoder, with its options as they stand when the examples are built (after `connect`).
        tokenizer: the data module's `tokenizer` argument (a path); None: the stage's, handed over in `connect`.
        prompt_style: the data module's prompt style, or its `prompt_style` argument ("alpaca", "chat", a class path
            or {class_path, init_args}); None: the style the stage hands over (its checkpoint's), else alpaca.
        batch_size: examples (rows, pairs, prompts) per batch of the loaders.
        num_workers: DataLoader worker processes.
        needs: the data module's other arguments the examples need, by name, as given (None: not given), for the
            stage to supply in `connect` (e.g. {"max_prompt_length": None}).
        finish: what is done with the examples once built (the preference pairs are numbered), or None.
    """

    def __init__(
        self,
        records: RecordSet,
        encode: Callable[[Iterable[tuple[str, Any]], SFTStats], list[T]],
        tokenizer: str | None,
        prompt_style: PromptStyle | str | dict[str, Any] | None,
        batch_size: int,
        num_workers: int,
        needs: Mapping[str, Any] | None = None,
        finish: Callable[[Split[T]], None] | None = None,
    ) -> None:
        self.records = records
        self.prompt_style: PromptStyle | None = load_style(prompt_style) if prompt_style is not None else None
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.stats: dict[str, SFTStats] = {}  # each split's, filled as the examples are built
        self.spec: DataSpec | None = None  # what the stage handed over in `connect`
        self._encode = encode
        # The data module's arguments as given: those left None are what a stage supplies.
        self._given = {"tokenizer": tokenizer, "prompt_style": prompt_style, **(needs or {})}
        self._finish = finish
        self._tokenizer: Tokenizer | None = None
        self._split: Split[T] | None = None

    # ---- what the examples are made with -------------------------------------------------------

    @property
    def tokenizer(self) -> Tokenizer:
        """The data module's tokenizer when given, else the stage's (`lit_llm.data.connect.load_tokenizer`)."""
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._given["tokenizer"], self.spec)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id, 0 without one."""
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0

    def missing(self) -> list[str]:
        """The arguments left unset that the examples need, for the stage to supply ([] once connected)."""
        if self.spec is not None:
            return []
        return [name for name, value in self._given.items() if value is None]

    # ---- building ------------------------------------------------------------------------------

    @property
    def built(self) -> bool:
        return self._split is not None

    def setup(self) -> None:
        """Build the examples unless they are built or an argument they need is missing (`connect` builds them)."""
        if self._split is None and not self.missing():
            self._build()

    def connect(self, spec: DataSpec, block_size: int | None, batch_shape: tuple[int, int] | None) -> DataInfo:
        """Build the examples with what the stage hands over (its tokenizer and checkpoint prompt style, else alpaca,
        where the data module has none), unless they are built already. Returns what the stage needs to know of the
        data, with the data module's layout (`block_size`, `batch_shape`)."""
        if self._split is None:
            self.spec = spec
            if self.prompt_style is None:
                self.prompt_style = spec.prompt_style or load_style("alpaca")
            self._build()
        return DataInfo(self.tokenizer, self.vocab_size, block_size, batch_shape, self.prompt_style, self.batch_size)

    def _build(self) -> None:
        split = self.records.build(self._encode, self.stats)
        if self._finish is not None:
            self._finish(split)
        self._split = split

    def split(self) -> Split[T]:
        """The train and val examples, built now if they can be; ConfigError naming what is missing if not."""
        if self._split is None:
            if self.missing():
                raise not_connected(self.missing())
            self._build()
        return self._split

    @property
    def train(self) -> list[T]:
        return self.split().train

    @property
    def val(self) -> list[T]:
        return self.split().val

    # ---- loaders -------------------------------------------------------------------------------

    def loader(self, items: list[Any], collate_fn: Callable, shuffle: bool, trainer: Any) -> DataLoader | list:
        """A loader of `items` (examples, or rows of them) in batches of `batch_size`, [] without any (no validation
        data); training loaders (`shuffle`) shuffle by (seed, epoch), deal the items to the Trainer's ranks and
        resume mid-epoch."""
        if not items:
            return []
        seed = self.records.seed
        return example_loader(items, self.batch_size, collate_fn, shuffle, seed, self.num_workers, trainer)


def from_examples(*names: str) -> tuple[property, ...]:
    """Read-only properties of a data module, one per name: its ExampleStore's (`self.examples`) attribute `name`."""
    return tuple(property(attrgetter(f"examples.{name}"), doc=f"`examples.{name}` (ExampleStore).") for name in names)
