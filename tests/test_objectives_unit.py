"""Objectives without training: registry defaults agree with the classes, settings are checked where they are
given, PPO's advantage arithmetic, and the sample bookkeeping of both batch layouts."""

from __future__ import annotations

import inspect
import re

import pytest

from xtune.errors import ConfigError

torch = pytest.importorskip("torch")


def test_registered_defaults_are_the_classes_defaults():
    from xtune.plugins import PluginSystem
    from xtune.registry import import_object

    system = PluginSystem()
    system.load_defaults()
    for entry in system.registry.objectives:
        params = inspect.signature(import_object(entry.loss).__init__).parameters
        for key, value in entry.defaults:
            assert key in params and params[key].default == value, (entry.name, key)


@pytest.mark.parametrize("cfg, message", [
    (dict(type="dpo", betta=0.2), "unknown settings: 'betta' (did you mean beta?)"),
    (dict(type="dpo", loss_type="robust"), "loss_type='robust' is not one of sigmoid, ipo, hinge"),
    (dict(type="dpo", loss_type="ipo", label_smoothing=0.1),
     "label_smoothing applies to loss_type='sigmoid'"),
    (dict(type="simpo", beta=0), "beta=0 must be a positive number"),
    (dict(type="ppo"), "needs reward_model=FOLDER"),
])
def test_bad_objective_settings_are_one_config_error(cfg, message):
    from mmengine.config import Config

    from xtune.objectives.build import build_objective
    from xtune.plugins import get_registry

    with pytest.raises(ConfigError, match=re.escape(message)):
        build_objective(Config(dict(objective=cfg)), get_registry())


def test_gae_matches_the_textbook_recursion():
    from xtune.objectives.ppo_rollout import cut_at_stop, gae

    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0], [0.5, 2.0, 0.0, 0.0]])
    values = torch.tensor([[0.2, 0.1, -0.1, 0.4], [0.3, 0.6, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.float32)
    advantages, returns = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for row in range(2):
        n, running, expected = int(mask[row].sum()), 0.0, []
        for t in reversed(range(n)):
            following = float(values[row, t + 1]) if t + 1 < n else 0.0
            running = float(rewards[row, t]) + 0.9 * following - float(values[row, t]) + 0.9 * 0.8 * running
            expected.insert(0, running)
        assert torch.allclose(advantages[row, :n], torch.tensor(expected), atol=1e-6)
        assert torch.all(advantages[row, n:] == 0)
    assert torch.allclose(returns, advantages + values)
    answers, keep = cut_at_stop(torch.tensor([[5, 2, 7, 8], [5, 6, 7, 8]]), [2], pad_id=0)
    assert answers.tolist() == [[5, 2, 0, 0], [5, 6, 7, 8]] and keep.tolist()[0] == [True, True, False, False]


def test_sample_ends_and_sums_agree_in_both_layouts():
    from xtune.data.preference_collate import PreferenceCollator
    from xtune.objectives.logps import TokenLogps, sample_ends, sample_index

    rows = [{"input_ids": [1, 2, 3, 4, 5], "labels": [-100, -100, 3, -100, 5],
             "position_ids": [0, 1, 2, 0, 1]},
            {"input_ids": [6, 7, 8, 9], "labels": [-100, 7, -100, 9], "position_ids": [0, 1, 0, 1]}]
    packed, unpacked = PreferenceCollator(0, True)(rows), PreferenceCollator(0, False)(rows)
    assert sample_index(packed).tolist() == [[0, 0, 0, 1, 1], [2, 2, 3, 3, -1]]
    assert unpacked["input_ids"].shape == (4, 3) and unpacked["sample_ids"][1].tolist() == [1, 1, -1]
    for batch in (packed, unpacked):
        rows_, cols = sample_ends(batch)
        assert batch["input_ids"][rows_, cols].tolist() == [3, 5, 7, 9]
    tokens = TokenLogps(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 0, 2]),
                        torch.tensor([True, False, True]), num_samples=3)
    assert tokens.sums().tolist() == [1.0, 0.0, 3.0] and tokens.counts(False).tolist() == [2.0, 0.0, 1.0]
