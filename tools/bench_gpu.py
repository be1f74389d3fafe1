"""`bench.py train --device cuda`: the GPU variant of the training benchmark.

A Qwen2.5-0.5B built from its published config with random weights (throughput does not depend on the
weights' values) trained with LoRA and with QLoRA, bf16, FlashAttention-2 when flash-attn is installed
(xtune packs with varlen attention; TRL's packing=True is padding-free BFD, its own varlen path), against
TRL on the same GPU. Full mode adds a random Llama-2-7B for QLoRA peak memory (XTuner publishes < 8 GB).

MFU = achieved model FLOPs/s ÷ the GPU's bf16 matmul peak *measured here* (a large bf16 matmul), not the
datasheet number. Model FLOPs per token: forward 2N, activation gradients 2N, weight gradients 2N_trainable
(so about 4N for LoRA, 6N for full fine-tuning); recomputation under gradient checkpointing is not counted
(it is overhead, not useful work) and attention's sequence-quadratic term is left out, which understates
MFU slightly at these sample lengths.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

# Published config.json values (Qwen/Qwen2.5-0.5B-Instruct, meta-llama/Llama-2-7b-hf); weights are random.
QWEN2_5_0_5B = dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                    num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                    max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                    tie_word_embeddings=True, bos_token_id=151643, eos_token_id=151645)
LLAMA2_7B = dict(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                 max_position_embeddings=4096,
                 rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                 eos_token_id=2)
LORA = dict(r=64, lora_alpha=16, lora_dropout=0.1)  # xtune's generated LoRA/QLoRA recipes


def lora_config():
    """The LoRA settings of xtune's recipes, for TRL's peft_config (all linear layers, like 'auto')."""
    from peft import LoraConfig

    return LoraConfig(**LORA, target_modules="all-linear", task_type="CAUSAL_LM")


def flash_attention_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("flash_attn") is not None


def describe_gpu() -> str:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA GPU; this machine has none")
    props = torch.cuda.get_device_properties(0)
    return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"


def random_model(name: str, config: dict, tokenizer_dir: Path) -> Path:
    """A model folder (bf16 safetensors + tokenizer) with random weights from `config`, made once."""
    root = Path(os.environ.get("XTUNE_BENCH_MODELS", Path(tempfile.gettempdir()) / "xtune-bench-models"))
    out = root / name
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}."))
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp)
    (
        tmp / "bench_params.json").write_text(
            json.dumps({"n_params": sum(p.numel() for p in model.parameters())}))
    del model
    torch.cuda.empty_cache()
    os.replace(tmp, out)
    return out


def gpu_profiles(quick: bool, alpaca: Path) -> list[dict]:
    from bench_common import shared_dir, tiny_model

    tokenizers = shared_dir() / "reference" / "tokenizers"
    qwen = random_model("qwen2.5-0.5b-random", QWEN2_5_0_5B, tokenizers / "hf_qwen2_5")
    fa2 = flash_attention_available()
    model_kwargs = {"dtype": "bfloat16", **({"attn_implementation": "flash_attention_2"} if fa2 else {})}
    common = dict(model=str(qwen), template="qwen2_5_chat",
                  data=str(alpaca / "llamafactory_alpaca_en_demo.json"),
                  train_records=512 if quick else 935, heldout_records=64, max_length=2048, lr=2e-4, seed=0,
                  epochs=1, device="cuda", n_params=_n_params(qwen), flash_attention=fa2,
                  xtune_options=[f"model.attn_implementation={'flash_attention_2' if fa2 else 'sdpa'}"])
    runs = [dict(common, name=f"qwen2.5-0.5b-{method}", method=method,
                 trl_args={"model_init_kwargs": model_kwargs},
                 recipe=f"qwen2_5_0_5b_instruct_{method}_alpaca_e3") for method in ("lora", "qlora")]
    if not quick:
        llama = random_model("llama2-7b-random", LLAMA2_7B, tiny_model())
        runs.append(dict(common, name="llama2-7b-qlora", model=str(llama), method="qlora",
                         template="llama2_chat",
                         recipe="llama2_7b_qlora_alpaca_e3", train_records=128, n_params=_n_params(llama),
                         trl_args={"model_init_kwargs": model_kwargs}))
    return runs


def trl_model_kwargs(spec: dict) -> dict:
    """TRL's model_init_kwargs for a run (in the worker: a quantization config does not go through JSON)."""
    kwargs = dict(spec.get("trl_args", {}).get("model_init_kwargs") or {})
    if spec.get("method") == "qlora":
        import torch
        from transformers import BitsAndBytesConfig

        # The recipes' quantization: NF4 with double quantization, bf16 compute.
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    return kwargs


def _n_params(model_dir: Path) -> int | None:
    path = Path(model_dir) / "bench_params.json"
    return json.loads(path.read_text())["n_params"] if path.is_file() else None


def matmul_peak_tflops(size: int = 8192, repeats: int = 20) -> float:
    """The bf16 matmul rate this GPU reaches: the denominator of MFU."""
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        a @ b
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    return 2 * size**3 * repeats / seconds / 1e12


def model_flops_per_token(n_params: int, trainable: int) -> float:
    return 4 * n_params + 2 * trainable


def add_mfu(result: dict) -> None:
    """Attach the measured matmul peak and each arm's MFU (non-padding tokens, model FLOPs)."""
    peak = matmul_peak_tflops()
    result["bf16_matmul_peak_tflops"] = peak
    for run in result["runs"]:
        n = run["settings"].get("n_params")
        for arm in run["arms"].values():
            tokens_s = arm.get("input_tokens_per_s")
            if not (n and tokens_s):
                continue
            trainable = n if run["settings"].get("method") == "full" else arm.get("params_trainable", 0)
            arm["tflops"] = model_flops_per_token(n, trainable) * tokens_s / 1e12
            arm["mfu"] = arm["tflops"] / peak


def mfu_markdown(result: dict) -> str:
    from bench_report import table

    rows = []
    for run in result["runs"]:
        for name, arm in run["arms"].items():
            if "mfu" in arm:
                rows.append([run["profile"], name, arm.get("input_tokens_per_s"), arm["tflops"], arm["mfu"],
                             arm.get("peak_memory_mib")])
    return "\n".join(
        [f"### MFU (bf16 matmul peak measured: {result.get('bf16_matmul_peak_tflops', 0):.0f} TFLOP/s)",
                      "", table(["run", "arm", "tokens/s (all non-pad)", "TFLOP/s", "MFU", "peak MiB"], rows),
                      ""])
