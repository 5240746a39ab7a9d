"""Data modules and the preparation steps they call."""

from lit_llm.data.pretrain import PretrainDataModule
from lit_llm.data.tokenizer import Tokenizer, train_bpe

__all__ = ["PretrainDataModule", "Tokenizer", "train_bpe"]
