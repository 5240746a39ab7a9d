"""Training stages: each a LightningModule that `lit-llm fit` runs from a YAML config. Every stage extends
`Stage` (lit_llm.stages.base) and nothing else; what two stages share is a component or a function."""

from lit_llm.stages.base import Stage
from lit_llm.stages.dpo import DPOModule
from lit_llm.stages.grpo import GRPOModule
from lit_llm.stages.orpo import ORPOModule
from lit_llm.stages.ppo import PPOModule
from lit_llm.stages.pretrain import CausalLM
from lit_llm.stages.reward import RewardModule
from lit_llm.stages.sft import SFTModule

__all__ = ["CausalLM", "DPOModule", "GRPOModule", "ORPOModule", "PPOModule", "RewardModule", "SFTModule", "Stage"]
