"""Answering prompts with a policy: rollout batches laid out for one forward pass and their log-probs (PPO),
greedy answers scored by the task verifiers (validation, evaluate, compare), sampling from a checkpoint."""
