#!/usr/bin/env python
"""Vision-language figures on this machine: a LLaVA composed of SmolLM2-135M-Instruct and a randomly
initialised encoder shaped like CLIP ViT-B/16 (224 px, 196 image tokens; no real encoder is reachable
offline), trained with `xtune train` in both LLaVA stages on drawn pictures, and its first batch checked
against TRL's vision collator (same input_ids and labels, so the same loss).

    python tools/bench_vlm.py [--steps 10] [--out work_dirs/bench_vlm]

Prints the seconds per optimizer step (median of the logged steps), the first and last losses of each
stage, and the TRL comparison. Needs ../shared (the Llama-2 tokenizer is not used; SmolLM2 comes from
tools/get_smollm2.py) and the bench extra (TRL).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ("llava_vicuna_7b_v1_5_clip_vit_large_p14_336_freeze_pretrain_llava_pretrain_e1",
           "llava_vicuna_7b_v1_5_clip_vit_large_p14_336_lora_finetune_llava_instruct_e1")


def encoder(folder: Path) -> Path:
    """A random CLIP vision tower of ViT-B/16's shape (86M parameters) with CLIP's image processor."""
    import torch
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        CLIPVisionModel(CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                         num_attention_heads=12, image_size=224, patch_size=16)
                        ).save_pretrained(folder)
        CLIPImageProcessorPil(size={"shortest_edge": 224},
                              crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def run(recipe: str, work_dir: Path, options: list[str]) -> dict:
    from xtune.cli.main import main

    if main(["train", recipe, "--work-dir", str(work_dir), "--overwrite", "--cfg-options", *options]) != 0:
        raise SystemExit(f"bench_vlm: {recipe} failed")
    losses = [h["loss"] for h in json.loads((work_dir / "loss_history.json").read_text())["train"]]
    scalars = sorted(work_dir.glob("*/vis_data/scalars.json"))[-1].read_text().splitlines()
    times = [json.loads(line)["time"] for line in scalars if '"time"' in line][1:]  # the first one warms up
    return dict(seconds_per_step=round(statistics.median(times), 3), first_loss=round(losses[0], 4),
                last_loss=round(losses[-1], 4), steps=len(losses))


def trl_check(options: list[str], data: Path) -> dict:
    """xtune's first batch vs TRL's DataCollatorForVisionLanguageModeling on the same records."""
    import torch
    from PIL import Image
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    from xtune.data.from_recipe import dataset_cfg, load_recipe_cfg
    from xtune.data.image_batches import build_image_collator
    from xtune.data.vlm_pipeline import build_image_dataset
    from xtune.models.build import build_trainable, recipe_processor
    from xtune.plugins import get_registry
    from xtune.templates.export import export_jinja
    from xtune.templates.images import as_content_parts, vision_jinja

    registry = get_registry()
    cfg = load_recipe_cfg(RECIPES[1], registry, options)
    processor = recipe_processor(cfg, registry)
    rows = build_image_dataset(dataset_cfg(cfg, registry), processor, registry=registry, use_cache=False)
    ours = build_image_collator({}, processor)([rows[i] for i in range(4)])
    processor.chat_template = vision_jinja(export_jinja(cfg.prompt_template, generation_tags=True,
                                                        registry=registry), processor.image_token)
    records = json.loads(data.read_text())[:4]
    examples = [{"messages": as_content_parts(r["messages"]),
                 "images": [Image.open(data.parent / n).convert("RGB") for n in r["images"]]}
                for r in records]
    theirs = DataCollatorForVisionLanguageModeling(processor, assistant_only_loss=True)(examples)
    from xtune.plan import resolve_plan

    model = build_trainable(cfg, registry, resolve_plan(cfg, registry)).model.eval()
    with torch.no_grad():
        loss = [float(model(**batch).loss) for batch in (ours, theirs)]
    return dict(same_input_ids=bool(torch.equal(ours["input_ids"], theirs["input_ids"])),
                same_labels=bool(torch.equal(ours["labels"], theirs["labels"])),
                loss_xtune=round(loss[0], 6), loss_trl=round(loss[1], 6))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "work_dirs" / "bench_vlm"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT / "tools"))
    import torch
    from get_smollm2 import ensure_smollm2
    from test_vlm_fixtures import write_llava, write_mllm

    out = Path(args.out)
    smol, clip = ensure_smollm2(), encoder(out / "clip_b16_random")
    llava_data, mllm_data = write_llava(out / "data", n=12), write_mllm(out / "data", n=12)
    common = [f"pretrained_model_name_or_path={smol}", f"vision_model_name_or_path={clip}",
              "llm_adapter=smollm2", "prompt_template=smollm2_chat", "batch_size=2", "accumulative_counts=1",
              f"max_steps={args.steps}", "save_steps=0", "log_interval=1", "warmup_ratio=0.0",
              "evaluation_inputs=[]", "export_hf=False", f"image_folder={out / 'data'}",
              "model.gradient_checkpointing=False"]
    stage1 = run(RECIPES[0], out / "stage1", common + [f"data_path={llava_data}", "lr=1e-3"])
    stage2_options = common + [f"data_path={mllm_data}", "dataset_map=mllm", "lr=1e-3"]
    stage2 = run(RECIPES[1], out / "stage2", stage2_options)
    report = dict(cpu=torch.backends.cpu.get_cpu_capability(), threads=torch.get_num_threads(),
                  batch="2 samples x ~250 tokens (196 of them image tokens)", stage1_projector=stage1,
                  stage2_lora=stage2, trl=trl_check(stage2_options, mllm_data))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
