"""Training objectives: what a run optimises, registered through the `register_objectives` plugin hook.

`sft` is xtune's supervised fine-tuning (token-mean cross-entropy on the trained tokens); `dpo`, `orpo`,
`simpo` and `kto` are preference losses on pairs (or KTO's unpaired items); `reward` trains a scalar-head
reward model with the Bradley-Terry loss; `ppo` optimises a reward model's score with PPO. Each takes the
recipe's `objective = dict(type=NAME, ...)` settings and turns `(llm, batch, reference)` into a loss and the
metrics TRL logs. `xtune.objectives.build` resolves a recipe's objective through the registry.
"""
