"""One LightningModule per training stage."""

from lit_llm.stages.causal_lm import CausalLM
from lit_llm.stages.sft import SFTModule

__all__ = ["CausalLM", "SFTModule"]
