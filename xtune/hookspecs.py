"""Every xtune plugin hook. Nothing else defines hooks.

These are pluggy *plugin* hooks, called once when xtune starts, to collect what plugins offer.
Per-step callbacks during training are mmengine *runner* hooks and live in `xtune.engine`.

Each `register_<things>` hook receives a `register` callback. Call it once per entry; the core
checks the entry, refuses a name that another plugin already registered (naming both plugins),
and records which plugin registered it. Hooks are called with keyword arguments: implementations
may accept any subset of a spec's arguments, and new arguments may be added to a spec later.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("xtune")
hookimpl = pluggy.HookimplMarker("xtune")


@hookspec
def register_model_adapters(register):
    """Register model families (`xtune.registry.ModelAdapter`).

    Args:
        register: call ``register(ModelAdapter(...))`` for each family.

    Example::

        @hookimpl
        def register_model_adapters(register):
            register(ModelAdapter(name="falcon", model_types=("falcon",), default_template="falcon_chat"))
    """


@hookspec
def register_models(register):
    """Register pretrained models (`xtune.registry.Model`): hub id, family, size and architecture.

    Args:
        register: call ``register(Model(name=..., family=..., hub_id=...))`` for each checkpoint. The
            architecture figures (hidden size, layers, heads, ...) let `xtune estimate` size a run
            without downloading anything; leave them 0 and it reads the model's config.json instead.

    Example::

        @hookimpl
        def register_models(register):
            register(Model(name="falcon_7b", family="falcon", hub_id="tiiuae/falcon-7b", params_b=7,
                           chat=False, hidden_size=4544, num_layers=32, num_heads=71, num_kv_heads=1,
                           intermediate_size=18176, vocab_size=65024))
    """


@hookspec
def register_checkpoint_conversions(register):
    """Register checkpoint conversions (`xtune.registry.CheckpointConversion`): how checkpoints in a legacy
    hub-code layout (InternLM, Baichuan, ChatGLM ...) load into a native transformers architecture holding
    the same weights, and how they are written back in their own layout.

    Args:
        register: call ``register(CheckpointConversion(name=..., model_type=..., target=..., config=...,
            weights=...))``. It applies to every checkpoint whose raw config.json matches (model_type,
            architectures, `requires`, `when`); `refuse="why"` names a layout with no native twin.

    Example::

        @hookimpl
        def register_checkpoint_conversions(register):
            register(CheckpointConversion(
                name="skywork_llama", model_type="skywork", architectures=("SkyworkForCausalLM",),
                target="llama", config="my_pkg.skywork:llama_config",
                weights=(("attention\\.wo", "self_attn.o_proj"),
                         ("attention\\.wqkv\\.weight", ("self_attn.q_proj.weight", "self_attn.k_proj.weight",
                          "self_attn.v_proj.weight"), "xtune.models.legacy_ops:grouped_qkv"))))
    """


@hookspec
def register_dataset_maps(register):
    """Register data sets and record formats (`xtune.registry.DatasetMap`).

    Args:
        register: call ``register(DatasetMap(...))``. A map either converts records itself
            (``convert="pkg.module:function"``, the function takes one record and returns a
            conversation) or reuses another map's converter with renamed columns
            (``format="alpaca", columns=(("instruction", "question"), ...)``).

    Example::

        @hookimpl
        def register_dataset_maps(register):
            register(DatasetMap(name="my_qa", format="alpaca", hub_id="me/my-qa",
                                columns=(("instruction", "question"), ("output", "answer"))))
    """


@hookspec
def register_chat_templates(register):
    """Register chat templates (`xtune.registry.ChatTemplate`), each with its stop words.

    Args:
        register: call ``register(ChatTemplate(...))`` for each template.

    Example::

        @hookimpl
        def register_chat_templates(register):
            register(ChatTemplate(name="my_chat", families=("my",), stop_words=("</s>",),
                                  user="<user>{content}</user>", generation_prompt="<bot>",
                                  assistant="{content}", assistant_end="</s>"))
    """


@hookspec
def register_tuning_methods(register):
    """Register tuning methods (`xtune.registry.TuningMethod`): full, LoRA, QLoRA, ...

    Args:
        register: call ``register(TuningMethod(name=..., builder="pkg.module:function"))``. The
            builder receives the loaded model and the recipe's method settings and returns the
            model to train.

    Example::

        @hookimpl
        def register_tuning_methods(register):
            register(TuningMethod(name="vera", builder="my_pkg.vera:apply", defaults=(("r", 256),)))
    """


@hookspec
def register_deepspeed_presets(register):
    """Register DeepSpeed configurations selectable with ``xtune train --deepspeed NAME``.

    Args:
        register: call ``register(DeepSpeedPreset(name=..., config=tuple(json_dict.items())))``;
            values set to ``"auto"`` are filled from the recipe.

    Example::

        @hookimpl
        def register_deepspeed_presets(register):
            register(DeepSpeedPreset(name="zero2_big_bucket", config=(
                ("zero_optimization", {"stage": 2, "reduce_bucket_size": 5e8}),
                ("train_micro_batch_size_per_gpu", "auto"))))
    """


@hookspec
def register_objectives(register):
    """Register training objectives (`xtune.registry.Objective`): sft, dpo, orpo, simpo, kto, reward, ppo ...

    Args:
        register: call ``register(Objective(name=..., loss="pkg.module:Class", data="pairs"))``. The class
            is built with the recipe's ``objective = dict(type=NAME, ...)`` settings over `defaults`; its
            ``loss(llm, batch, reference)`` returns ``{"loss": tensor, **metrics}``. `data` names the rows
            it trains on ('sft', 'pairs', 'unpaired', 'prompts'), `head` the model ('causal_lm' or
            'score'), `reference` whether it needs a reference model's log-probs.

    Example::

        @hookimpl
        def register_objectives(register):
            register(Objective(name="rso", loss="my_pkg.rso:RSO", data="pairs", reference=True,
                               defaults=(("beta", 0.05),)))
    """


@hookspec
def register_reward_functions(register):
    """Register reward functions (`xtune.registry.RewardFunction`) for online RL (`grpo`): a recipe names
    them in ``objective = dict(type="grpo", reward_funcs=[...], reward_weights=[...])``.

    Args:
        register: call ``register(RewardFunction(name=..., function="pkg.module:function", needs=(...)))``.
            The function is called as ``fn(prompts, completions, **kwargs)`` and returns one float (or None:
            does not apply) per completion. kwargs hold ``completion_ids``, ``max_completion_length``,
            ``prompt_messages``, one list per record column (the columns in `needs` are checked), and the
            settings a recipe gives with ``dict(type=NAME, setting=value)``; accept the rest with
            ``**kwargs``.

    Example::

        @hookimpl
        def register_reward_functions(register):
            register(RewardFunction(name="exact_answer", function="my_pkg.rewards:exact_answer",
                                    needs=("answer",)))
    """


@hookspec
def register_recipes(register):
    """Register recipes (`xtune.registry.Recipe`): a Python config file plus the metadata that
    `xtune list-cfg` shows without opening it.

    Args:
        register: call ``register(Recipe(name=..., path=..., model=..., method=..., dataset=...))``,
            or let `xtune.recipe_files.recipes_in_dir(folder)` read the metadata of every recipe
            file in a folder.

    Example::

        @hookimpl
        def register_recipes(register):
            for recipe in recipes_in_dir(Path(__file__).parent / "recipes"):
                register(recipe)
    """


@hookspec
def register_commands(subparsers):
    """Add subcommands to the `xtune` command line.

    Args:
        subparsers: the `argparse` sub-parser collection of `xtune`. Add a parser and set its
            ``func`` default to a function taking the parsed arguments and returning an exit code.
            Import heavy libraries inside that function, not at module level.

    Example::

        @hookimpl
        def register_commands(subparsers):
            p = subparsers.add_parser("hello", help="say hello")
            p.set_defaults(func=lambda args: print("hello") or 0)
    """
