"""Unit tests of the engine's pure parts: overrides, preflight checks, schedule, DeepSpeed "auto" filling,
resume lookup, NaN policy. Milliseconds each, apart from one mmengine import."""

from __future__ import annotations

import pytest

from xtune.errors import ConfigError, UsageError
from xtune.plugins import get_registry
from xtune.recipe import load_recipe, parse_overrides, rewrite_source
from xtune.recipe_files import resolve_recipe

RECIPE = "llama2_7b_qlora_alpaca_e3"


def recipe_path():
    return resolve_recipe(RECIPE, get_registry())


def test_top_level_override_reaches_every_use():
    cfg = load_recipe(recipe_path(), ["lr=1e-4", "max_length=512", "data_path=./my.json",
                                      "pretrained_model_name_or_path=/models/x", "batch_size=4",
                                      "save_steps=7"])
    assert cfg.optim_wrapper.optimizer.lr == 1e-4
    assert cfg.train_dataset.max_length == 512 and cfg.max_length == 512
    assert cfg.train_dataset.data_path == "./my.json"
    model_path = cfg.model.pretrained_model_name_or_path
    assert model_path == cfg.tokenizer.pretrained_model_name_or_path == "/models/x"
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.checkpoint.interval == 7


def test_dotted_override_and_method_settings():
    cfg = load_recipe(recipe_path(), ["model.gradient_checkpointing=False", "method_cfg.r=16",
                                      "method_cfg.use_dora=True", "evaluate_chat.max_new_tokens=8"])
    assert cfg.model.gradient_checkpointing is False
    assert cfg.method_cfg.r == 16 and cfg.method_cfg.use_dora is True
    assert cfg.evaluate_chat.max_new_tokens == 8


def test_seed_flag_and_engine_settings():
    cfg = load_recipe(recipe_path(), ["on_nan=skip"], {"seed": 7})
    assert cfg.randomness.seed == 7 and cfg.on_nan == "skip"
    assert load_recipe(recipe_path()).on_nan == "stop"  # default filled in


@pytest.mark.parametrize("option,message", [
    ("lrr=1e-4", "unknown setting 'lrr' (did you mean: lr"),
    ("model.gradient_checkpointin=False", "did you mean: model.gradient_checkpointing"),
    ("lr=fast", "lr='fast': expected a float"),
    ("batch_size=True", "expected an int"),
    ("max_length=1.5", "expected an int"),
    ("pack_to_max_length=1", "expected a bool"),
    ("lr", "expects KEY=VALUE"),
])
def test_bad_overrides_are_config_errors(option, message):
    with pytest.raises(ConfigError) as exc:
        load_recipe(recipe_path(), [option])
    assert message in str(exc.value)
    assert exc.value.exit_code == 2


def test_all_override_problems_reported_together():
    with pytest.raises(ConfigError) as exc:
        load_recipe(recipe_path(), ["lrr=1", "batch_size=x"])
    assert "lrr" in str(exc.value) and "batch_size" in str(exc.value)


def test_rewrite_keeps_comments_and_handles_multiline_values():
    text = "a = 1  # keep me\nb = dict(\n    x=a,\n)\nc = [1,\n     2]\n"
    new, problems = rewrite_source(text, parse_overrides(["a=5", "c=[3]"]))
    assert not problems
    assert "a = 5  # keep me" in new and "c = [3]" in new and "x=a" in new


def test_preflight_reports_every_problem(tmp_path):
    from xtune.engine.checks import preflight

    cfg = load_recipe(recipe_path(), ["data_path=./nope.json", "method=nomethod", "prompt_template=nope",
                                      "pretrained_model_name_or_path=/no/such/model"])
    with pytest.raises(ConfigError) as exc:
        preflight(cfg, get_registry(), work_dir=tmp_path / "wd", deepspeed="zero9")
    text = str(exc.value)
    for part in ("nope.json", "nomethod", "prompt_template", "/no/such/model", "zero9"):
        assert part in text, part


def test_preflight_unwritable_work_dir(tmp_path):
    from xtune.engine.checks import preflight

    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = load_recipe(recipe_path(), [f"data_path={blocker}"])
    with pytest.raises(ConfigError, match="not writable"):
        preflight(cfg, get_registry(), work_dir=blocker / "sub")


def test_schedule_counts_steps_and_micro_batches():
    from xtune.engine.optim import param_schedulers
    from xtune.plan import training_plan
    from xtune.schedule import plan_schedule

    def schedule_of(options: list[str], rows: int):
        return plan_schedule(training_plan(load_recipe(recipe_path(), options), None), dataset_len=rows)

    cfg = load_recipe(recipe_path(), ["max_steps=300", "accumulative_counts=4", "batch_size=2"])
    sched = schedule_of(["max_steps=300", "accumulative_counts=4", "batch_size=2"], 100)
    assert (sched.max_iters, sched.max_steps) == (1200, 300)
    assert (sched.micro_batches(1), sched.micro_batches(300), sched.micro_batches_before(11)) == (4, 4, 40)
    assert (sched.micro_batches_before(1), sched.steps_done(41)) == (0, 11)
    warm, cosine = param_schedulers(cfg.param_scheduler, sched)  # laid out in optimizer steps
    assert warm["type"] == "LinearLR" and warm["end"] == round(0.03 * 300)
    assert cosine["type"] == "CosineAnnealingLR" and cosine["end"] == 300
    assert schedule_of(["max_epochs=2", "batch_size=4"], 10).max_iters == 2 * 3
    uneven = schedule_of(["max_epochs=1", "batch_size=1", "accumulative_counts=4"], 10)
    assert (uneven.max_steps, [uneven.micro_batches(s) for s in (1, 2, 3)]) == (3, [4, 4, 2])  # a short last


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")
@pytest.mark.parametrize("total", [1, 2, 17, 33, 50, 51, 67, 120, 400])
@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_schedulers_reach_the_full_lr_after_warmup(total, kind):
    """Step real mmengine schedulers: the peak lr is the recipe's lr whatever the run length (a one-iteration
    warm-up once left the whole run at 1e-5 x lr), and decaying schedules end low."""
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.optim.scheduler import ConstantLR, CosineAnnealingLR, LinearLR

    from xtune.engine.optim import param_schedulers
    from xtune.schedule import Schedule

    classes = {"LinearLR": LinearLR, "CosineAnnealingLR": CosineAnnealingLR, "ConstantLR": ConstantLR}
    optimizer = OptimWrapper(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1))
    schedulers = [classes[c.pop("type")](optimizer, **c) for c in
                  param_schedulers(dict(type=kind, warmup_ratio=0.03), Schedule(1, total, total))]
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        for scheduler in schedulers:
            scheduler.step()
    assert max(lrs) == pytest.approx(0.1, rel=1e-6)
    if kind != "constant" and total >= 17:
        assert lrs[-1] < 0.1 * 0.1


def test_deepspeed_auto_fields_come_from_the_recipe():
    from xtune.engine.deepspeed_config import fill_auto, load_deepspeed_config

    ds = fill_auto(load_deepspeed_config("zero2", get_registry()), micro_batch=2, accumulation=8,
                   max_norm=1.0,
                   precision="bfloat16", world_size=2, cuda=False)
    assert ds["train_micro_batch_size_per_gpu"] == 2 and ds["gradient_accumulation_steps"] == 8
    assert ds["train_batch_size"] == 32 and ds["gradient_clipping"] == 1.0
    assert ds["bf16"]["enabled"] is True and ds["fp16"]["enabled"] is False
    assert ds["zero_optimization"]["stage"] == 2


def test_deepspeed_user_file(tmp_path):
    from xtune.engine.deepspeed_config import fill_auto, load_deepspeed_config

    path = tmp_path / "ds.json"
    path.write_text('{"train_batch_size": 5, "zero_optimization": {"stage": 1}}')
    with pytest.raises(ConfigError, match="train_batch_size=5"):
        fill_auto(load_deepspeed_config(str(path), get_registry()), micro_batch=2, accumulation=1,
                  max_norm=None,
                  precision="float32", cuda=False)
    path.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_deepspeed_config(str(path), get_registry())


def test_find_resume_checkpoint(tmp_path):
    from xtune.checkpoint.layout import find_resume_checkpoint

    assert find_resume_checkpoint("auto", tmp_path) is None
    ckpt = tmp_path / "iter_3.pth"
    ckpt.write_bytes(b"x")
    (tmp_path / "last_checkpoint").write_text(str(ckpt))
    assert find_resume_checkpoint("auto", tmp_path) == str(ckpt)
    newer = tmp_path / "iter_5.pth"  # killed after the rename, before last_checkpoint was updated
    newer.write_bytes(b"x")
    assert find_resume_checkpoint("auto", tmp_path) == str(newer)
    with pytest.raises(UsageError):
        find_resume_checkpoint(str(tmp_path / "missing.pth"), tmp_path)


def test_non_finite_loss_stops_or_skips():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    from xtune.engine.model import CausalLMModel, NonFiniteLossError

    llm = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16,
                                       num_hidden_layers=1,
                                       num_attention_heads=2, num_key_value_heads=2))
    with torch.no_grad():
        llm.lm_head.weight.fill_(float("nan"))
    ids = torch.randint(0, 32, (1, 6))
    with pytest.raises(NonFiniteLossError, match="not finite"):
        CausalLMModel(llm, on_nan="stop")(input_ids=ids, labels=ids)
    model = CausalLMModel(llm, on_nan="skip")
    loss = model(input_ids=ids, labels=ids)["loss"]
    loss.backward()
    assert loss.item() == 0.0 and model.skipped_batches == 1
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in llm.parameters())


def test_cli_unknown_key_exits_2(capsys):
    from xtune.cli.main import main

    assert main(["train", RECIPE, "--cfg-options", "lrr=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error:") and "did you mean: lr" in err


def test_cli_missing_data_exits_2(capsys, tmp_path):
    from xtune.cli.main import main

    code = main(["train", RECIPE, "--work-dir", str(tmp_path / "wd"), "--cfg-options",
                 f"data_path={tmp_path / 'missing.json'}"])
    assert code == 2
    assert "missing.json' does not exist" in capsys.readouterr().err


def test_nproc_per_node_builds_a_torchrun_command():
    from xtune.engine.launch import torchrun_command

    assert torchrun_command(["r"], {}) is None
    cmd = torchrun_command(["r", "--deepspeed", "zero2"],
                           {"NPROC_PER_NODE": "4", "NNODES": "2", "NODE_RANK": "1",
                                                           "ADDR": "10.0.0.1", "PORT": "1234"})
    assert "--nproc_per_node=4" in cmd and "--nnodes=2" in cmd and "--node_rank=1" in cmd
    assert "--master_addr=10.0.0.1" in cmd and "--master_port=1234" in cmd
    assert cmd[-2:] == ["--launcher", "pytorch"] and cmd[cmd.index("train") + 1] == "r"


def test_model_sources(tmp_path):
    import gguf as gguf_package
    import numpy as np

    from xtune.models.loading import resolve_attn_implementation, resolve_source

    gguf = tmp_path / "m.Q4.gguf"  # a whole (tiny) GGUF file: a truncated one is refused when resolved
    writer = gguf_package.GGUFWriter(str(gguf), "llama")
    writer.add_tensor("x", np.zeros(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert resolve_source(str(gguf)) == type(resolve_source(str(gguf)))(str(tmp_path), "m.Q4.gguf")
    assert resolve_source(str(tmp_path)).path == str(tmp_path)
    assert resolve_source("org/name").path == "org/name"  # a hub id, loaded by from_pretrained
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_source("./missing_model")
    import torch

    if torch.cuda.is_available():
        return
    assert resolve_attn_implementation("auto") is None  # transformers' default: sdpa, or eager (Gemma-2)
    assert resolve_attn_implementation("sdpa") == "sdpa"
    with pytest.raises(ConfigError, match="flash-attn"):
        resolve_attn_implementation("flash_attention_2")
