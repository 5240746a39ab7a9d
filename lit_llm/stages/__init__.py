"""Training stages: each a LightningModule that `lit-llm fit` runs from a YAML config."""

from lit_llm.stages.causal_lm import CausalLM
from lit_llm.stages.dpo import DPOModule
from lit_llm.stages.orpo import ORPOModule
from lit_llm.stages.ppo import PPOModule
from lit_llm.stages.reward import RewardModule
from lit_llm.stages.sft import SFTModule

__all__ = ["CausalLM", "DPOModule", "ORPOModule", "PPOModule", "RewardModule", "SFTModule"]
