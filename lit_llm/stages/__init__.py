"""One LightningModule per training stage."""

from lit_llm.stages.causal_lm import CausalLM

__all__ = ["CausalLM"]
