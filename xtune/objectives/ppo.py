"""`ppo`: RLHF with PPO on a reward model trained with the `reward` objective, on the same mmengine runner.

One training step is one PPO step: the policy (usually LoRA) answers a batch of prompts, the frozen reward
model scores the answers, a KL penalty to the reference (the policy with adapters off) shapes per-token
rewards, and `ppo_epochs` passes of clipped policy and value updates follow over `num_mini_batches`
mini-batches (each one optimizer update). The rollout is the objective's phase before its gradient steps:
`updates(model, batches)` returns the mini-batches, and the training loop (`xtune.engine.loop`) runs one
optimizer update on each, with `loss` as for any other objective. The value head is a linear layer on the
policy's last hidden states, trained beside it and left out of the exported model. Dropout is switched off
in the policy so the sampled and the updated log-probs come from the same function. Runs in one process
(no DDP / DeepSpeed).
"""

from __future__ import annotations

import torch

from xtune.objectives import ppo_rollout as ro
from xtune.objectives.settings import positive


class PPO:
    """reward_model: the folder of a reward model (full, or a PEFT adapter of one, e.g. WORK_DIR/hf of a
    `reward` run); kl_coef: weight of the per-token KL penalty; cliprange / cliprange_value: PPO clipping of
    the ratio / value; vf_coef: weight of the value loss; gamma, lam: GAE; max_new_tokens, temperature,
    top_k: sampling of the answers; missing_eos_penalty: subtracted from the score of an answer that did not
    stop (None: none)."""

    def __init__(self, reward_model: str = "", kl_coef: float = 0.05, cliprange: float = 0.2,
                 cliprange_value: float = 0.2, vf_coef: float = 0.1, gamma: float = 1.0, lam: float = 0.95,
                 ppo_epochs: int = 4, num_mini_batches: int = 1, max_new_tokens: int = 64,
                 temperature: float = 1.0, top_k: int = 0, missing_eos_penalty: float | None = None,
                 reference: str = "auto"):
        from xtune.errors import ConfigError

        if not reward_model:
            raise ConfigError("objective 'ppo' needs reward_model=FOLDER (a reward model, e.g. the "
                              "WORK_DIR/hf of a reward recipe)")
        self.reward_model_path, self.reference = str(reward_model), reference
        self.kl_coef = positive("ppo", "kl_coef", kl_coef, zero=True)
        self.cliprange, self.cliprange_value = positive("ppo", "cliprange", cliprange), positive(
            "ppo", "cliprange_value", cliprange_value)
        self.vf_coef = positive("ppo", "vf_coef", vf_coef, zero=True)
        self.gamma, self.lam = positive("ppo", "gamma", gamma), positive("ppo", "lam", lam)
        self.ppo_epochs, self.num_mini_batches = int(ppo_epochs), int(num_mini_batches)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature, self.top_k = positive("ppo", "temperature", temperature), int(top_k)
        self.missing_eos_penalty = missing_eos_penalty
        self.reward = None  # (model, tokenizer), loaded by setup()

    def heads(self, llm) -> dict:
        """Trained modules beside the policy: the value head."""
        hidden = llm.get_base_model().config.hidden_size if hasattr(llm, "get_base_model") \
            else llm.config.hidden_size
        head = torch.nn.Linear(hidden, 1)
        torch.nn.init.normal_(head.weight, std=1.0 / (hidden + 1) ** 0.5)
        torch.nn.init.zeros_(head.bias)
        self.value_head = head  # the same module the engine trains beside the policy (moved in place)
        return {"ppo_value": head}

    def setup(self, *, llm, tokenizer, template, registry, precision: str = "float32", adapter=None) -> None:
        """Load the reward model, find the stop tokens, and switch dropout off in the policy."""
        from xtune.models.build import load_reward_model

        model, reward_tokenizer = load_reward_model(self.reward_model_path, precision=precision)
        self.reward = (model, reward_tokenizer)
        self.tokenizer, self.template, self.registry = tokenizer, template, registry
        self.stop_ids = stop_token_ids(tokenizer, template, registry)
        for module in llm.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0

    def describe(self) -> str:
        return f"reward model {self.reward_model_path}, stop tokens {self.stop_ids}"

    @torch.no_grad()
    def rollout(self, llm, value_head, batch: dict, reference) -> ro.Rollout:
        from xtune.objectives.reward import score_conversations

        prompts, mask = batch["input_ids"], batch["attention_mask"]
        was_training = llm.training
        llm.eval()
        try:
            got = ro.sample_answers(llm, prompts, mask, stop_ids=self.stop_ids,
                                    pad_id=self.tokenizer.pad_token_id, max_new_tokens=self.max_new_tokens,
                                    temperature=self.temperature, top_k=self.top_k, top_p=1.0)
            answers, answer_mask, sequences = got.answers, got.answer_mask, got.sequences
            attention, positions, args = got.attention_mask, got.position_ids, got.forward_args()
            logps, values = ro.answer_forward(llm, value_head, *args)
            with reference.active(llm) as ref_model:
                ref_logps, _ = ro.answer_forward(ref_model, None, *args)
        finally:
            llm.train(was_training)
        texts = ro.answer_texts(self.tokenizer, answers, answer_mask, self.stop_ids)
        model, tokenizer = self.reward
        scores = torch.tensor(score_conversations(model, tokenizer, self.template,
                                                  ro.conversations(batch["prompt_messages"], texts),
                                                  registry=self.registry), device=logps.device)
        stops = torch.tensor(self.stop_ids, device=answers.device)
        stopped = (torch.isin(answers, stops) & answer_mask).any(-1)
        if self.missing_eos_penalty is not None:
            scores = scores - float(self.missing_eos_penalty) * (~stopped)
        kl = (logps - ref_logps) * answer_mask
        rewards = -self.kl_coef * kl
        last = answer_mask.long().cumsum(-1).argmax(-1)  # index of the last answer token
        rewards[torch.arange(len(last)), last] += scores
        advantages, returns = ro.gae(rewards, values, answer_mask.float(), self.gamma, self.lam)
        advantages = ro.whiten(advantages, answer_mask.float())
        metrics = {"ppo/score": scores.mean(), "ppo/kl": kl.sum(-1).mean(),
                   "ppo/answer_tokens": answer_mask.float().sum(-1).mean(),
                   "ppo/stopped": stopped.float().mean()}
        return ro.Rollout(sequences, attention, positions, prompts.shape[1], answer_mask, logps, values,
                          advantages, returns, metrics)

    def update_loss(self, llm, value_head, part: ro.Rollout) -> dict:
        """The clipped PPO policy loss plus vf_coef x the clipped value loss on one mini-batch."""
        mask = part.answer_mask.float()
        n = mask.sum().clamp(min=1)
        logps, values = ro.answer_forward(llm, value_head, part.sequences, part.attention_mask,
                                          part.position_ids, part.prompt_length, part.answer_mask)
        ratio = torch.exp(logps - part.logps)
        policy = torch.max(-part.advantages * ratio,
                           -part.advantages * ratio.clamp(1 - self.cliprange, 1 + self.cliprange))
        clipped = part.values + (values - part.values).clamp(-self.cliprange_value, self.cliprange_value)
        value = 0.5 * torch.max((values - part.returns) ** 2, (clipped - part.returns) ** 2)
        policy_term, value_term = (policy * mask).sum() / n, (value * mask).sum() / n
        clipfrac = (((ratio - 1).abs() > self.cliprange).float() * mask).sum() / n
        return {"loss": policy_term + self.vf_coef * value_term, "ppo/policy_term": policy_term.detach(),
                "ppo/value_term": value_term.detach(), "ppo/clipfrac": clipfrac.detach()}

    def updates(self, model, batches: list) -> Updates:
        """The phase before the gradient steps: a rollout on the step's prompts, then `ppo_epochs` shuffled
        passes over `num_mini_batches` mini-batches of it, each one optimizer update (`model` is the
        engine's wrapper: its llm, reference and data preprocessor)."""
        data = model.data_preprocessor(batches[0], True)
        rollout = self.rollout(model.llm, self.value_head, data, model.reference)
        rows = rollout.sequences.shape[0]
        out = Updates(metrics={k: v.detach() for k, v in rollout.metrics.items()})
        for _ in range(self.ppo_epochs):
            order = torch.randperm(rows, device=rollout.sequences.device)
            for part_rows in order.chunk(max(1, min(self.num_mini_batches, rows))):
                out.append([{"rollout": rollout.select(part_rows)}])
        return out

    def loss(self, llm, batch: dict, reference=None) -> dict:
        """The clipped PPO loss of one rollout mini-batch (`updates` made it)."""
        return self.update_loss(llm, self.value_head, batch["rollout"])


class Updates(list):
    """The optimizer updates of one PPO step (each a list of micro-batches), with the rollout's metrics."""

    def __init__(self, metrics: dict):
        super().__init__()
        self.metrics = metrics


def stop_token_ids(tokenizer, template, registry) -> list[int]:
    """EOS and every stop word of the template that is one token of this tokenizer."""
    from xtune.templates import get_template

    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    for word in get_template(template, registry).stop_words:
        if word in vocab and vocab[word] not in ids:
            ids.append(vocab[word])
    if not ids:
        from xtune.errors import ConfigError

        raise ConfigError("PPO needs a stop token: the tokenizer has no EOS and no stop word of the "
                          "template is one of its tokens")
    return ids
