"""The reference plugin's reward function, for online RL (`grpo`): named in plugin.py by import path, imported
only when a recipe uses it. It follows xtune's calling convention: keyword arguments, one float per
completion, everything else accepted and ignored through ``**kwargs``."""

from __future__ import annotations


def ngram_repetition(prompts, completions, ngram_size: int = 3, max_penalty: float = -1.0, **kwargs):
    """A penalty for repeating itself, the failure small chat models fall into under RL (as open-r1's
    repetition penalty): ``max_penalty`` x the share of the completion's word n-grams that repeat an
    earlier one; 0 for a completion shorter than one n-gram."""
    rewards = []
    for completion in completions:
        words = (completion or "").lower().split()
        if len(words) < ngram_size:
            rewards.append(0.0)
            continue
        ngrams = [tuple(words[i:i + ngram_size]) for i in range(len(words) - ngram_size + 1)]
        rewards.append((1 - len(set(ngrams)) / len(ngrams)) * max_penalty)
    return rewards


def _check(ngram_size=3, max_penalty=-1.0, **_):
    """Refuse settings that would make the penalty meaningless, when the recipe is resolved."""
    from xtune.errors import ConfigError

    if isinstance(ngram_size, bool) or not isinstance(ngram_size, int) or ngram_size < 1:
        raise ConfigError(f"reward function 'ngram_repetition': ngram_size={ngram_size!r} must be a positive "
                          "whole number")
    if not isinstance(max_penalty, (int, float)) or max_penalty > 0:
        raise ConfigError(f"reward function 'ngram_repetition': max_penalty={max_penalty!r} must be <= 0")


ngram_repetition.check_settings = _check
