"""Built-in reward functions for online RL (`grpo`; docs/plugins.md, `register_reward_functions`). Each is
implemented in `xtune.objectives.reward_builtins`, named here by import path so that building the registry
imports neither math-verify nor torch."""

from xtune.hookspecs import hookimpl
from xtune.registry import RewardFunction

_R = "xtune.objectives.reward_builtins"

REWARD_FUNCTIONS = [
    RewardFunction(name="math_verify", function=f"{_R}:math_answer", needs=("answer",),
                   description="1 when the completion's final answer (\\boxed{} or last number) equals the "
                               "record's answer (GSM8K '#### 72', LaTeX) as mathematics, by math-verify"),
    RewardFunction(name="format", function=f"{_R}:format_match",
                   description="1 when the completion matches `pattern` (default <think>...</think> "
                               "<answer>...</answer>)"),
    RewardFunction(name="overlong", function=f"{_R}:overlong",
                   description="DAPO's soft overlong penalty: 0 to -1 over the last `overlong_buffer` tokens "
                               "before max_completion_length"),
    RewardFunction(name="reward_model", function=f"{_R}:reward_model",
                   description="a trained xtune reward model's score (setting `path`: its folder)"),
]


@hookimpl
def register_reward_functions(register):
    for reward_function in REWARD_FUNCTIONS:
        register(reward_function)
