"""lit_llm: a Lightning-native framework from raw text to an aligned language model."""

from lit_llm.data import PretrainDataModule
from lit_llm.model import GPT, Config
from lit_llm.stages import CausalLM

__version__ = "0.1.0"
__all__ = ["GPT", "CausalLM", "Config", "PretrainDataModule", "__version__"]
