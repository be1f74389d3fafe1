"""Built-in training objectives (docs/preference.md). Each class lives in `xtune.objectives`; `defaults` are
the settings a recipe's `objective = dict(type=NAME, ...)` starts from (the recipe generator writes them)."""

from xtune.hookspecs import hookimpl
from xtune.registry import Objective

_O = "xtune.objectives"
_REF = (("reference", "auto"), ("precompute_ref_log_probs", False))

OBJECTIVES = [
    Objective(name="sft", loss=f"{_O}.sft:SFT",
              description="supervised fine-tuning: cross-entropy on the answers"),
    Objective(name="dpo", loss=f"{_O}.dpo:DPO", data="pairs", reference=True,
              defaults=(("beta", 0.1), ("loss_type", "sigmoid"), ("label_smoothing", 0.0)) + _REF,
              description="Direct Preference Optimization (sigmoid / ipo / hinge losses)"),
    Objective(name="orpo", loss=f"{_O}.cpo:ORPO", data="pairs",
              defaults=(("beta", 0.1), ("nll_on_prompt", False)),
              description="Odds Ratio Preference Optimization: NLL + odds-ratio term, no reference"),
    Objective(name="simpo", loss=f"{_O}.cpo:SimPO", data="pairs",
              defaults=(("beta", 2.0), ("simpo_gamma", 1.0), ("label_smoothing", 0.0), ("cpo_alpha", 0.0)),
              description="SimPO: length-normalised rewards with a target margin, no reference"),
    Objective(name="kto", loss=f"{_O}.kto:KTO", data="unpaired", reference=True,
              defaults=(("beta", 0.1), ("desirable_weight", 1.0), ("undesirable_weight", 1.0)) + _REF,
              description="Kahneman-Tversky Optimization on answers labelled desirable or not"),
    Objective(name="reward", loss=f"{_O}.reward:Reward", data="pairs", head="score",
              defaults=(("center_rewards_coefficient", 0.0),),
              description="reward model: Bradley-Terry loss on a scalar head (sequence classification)"),
    Objective(name="ppo", loss=f"{_O}.ppo:PPO", data="prompts", reference=True,
              defaults=(("reward_model", ""), ("kl_coef", 0.05), ("cliprange", 0.2), ("cliprange_value", 0.2),
                        ("vf_coef", 0.1), ("gamma", 1.0), ("lam", 0.95), ("ppo_epochs", 4),
                        ("num_mini_batches", 1), ("max_new_tokens", 64), ("temperature", 1.0), ("top_k", 0),
                        ("missing_eos_penalty", None), ("reference", "auto")),
              description="RLHF: PPO on a reward model's score with a KL penalty to the reference"),
    Objective(name="grpo", loss=f"{_O}.grpo:GRPO", data="prompts", reference=True,
              defaults=(("reward_funcs", ("format",)), ("reward_weights", None), ("num_generations", 8),
                        ("max_completion_length", 256), ("temperature", 1.0), ("top_p", 1.0), ("top_k", 0),
                        ("beta", 0.0), ("epsilon", 0.2), ("epsilon_high", None), ("num_iterations", 1),
                        ("loss_type", "dapo"), ("scale_rewards", "group"),
                        ("mask_truncated_completions", False), ("reference", "auto")),
              description="online RL with verifiable rewards: GRPO / DAPO / Dr. GRPO on reward functions"),
]


@hookimpl
def register_objectives(register):
    for objective in OBJECTIVES:
        register(objective)
