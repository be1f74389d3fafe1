"""`bench.py data`: preprocessing rate of xtune's data pipeline against TRL's dataset preparation.

Both sides start from the same alpaca JSON file and end with packed training rows (input_ids + labels
with the prompt masked, packed to max_length), with the same tokenizer and the same chat template: xtune
renders its `llama2_chat` template; TRL gets the jinja that `xtune template export llama2_chat` writes,
which renders byte-identically (tests/test_templates*), set as the tokenizer's chat_template the way a TRL
user with the official Llama-2-chat tokenizer has it.

- xtune: `xtune.data.build_train_dataset(cfg, tokenizer)`, the entry point `xtune train` calls: reading,
  record checks, the alpaca map, template rendering, tokenizing with labels, packing, and writing its cache.
  "warm" is the second call with the same settings, answered from that cache.
- TRL: `datasets.load_dataset("json")`, the map from alpaca columns to prompt/completion messages that a
  TRL user writes, then `SFTTrainer._prepare_dataset` (the method SFTTrainer runs at construction: chat
  template, tokenizing, completion mask, labels, BFD packing). "warm" is the same again with the same
  datasets cache folder, where `datasets` may reuse cached map results.

Times are taken inside one worker process per tool (imports excluded), with 1 and 2 processes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

TEMPLATE = "llama2_chat"
MAX_LENGTH = 1024
GSM8K = ("data", "alpaca", "gururise_gsm_8k_train_alpaca_format.json")


def run(quick: bool, out: Path, log=print) -> dict:
    import bench_report
    from bench_common import run_arm, shared_dir, tiny_model

    source = shared_dir().joinpath(*GSM8K)
    records = json.loads(source.read_text(encoding="utf-8"))
    if quick:
        records = records[:2000]
    out.mkdir(parents=True, exist_ok=True)
    data_file = out / "records.json"
    data_file.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    spec = dict(kind="data", data=str(data_file), model=str(tiny_model()), template=TEMPLATE,
                max_length=MAX_LENGTH,
                procs=[1, 2])
    tools = {}
    for tool in ("xtune", "trl"):
        log(f"[data] {tool} ...")
        tools[tool] = run_arm(dict(spec, arm=tool, cache=str(out / f"{tool}-cache")), out / tool)
        log(f"[data]   {tools[tool]['figures']}")
    settings = {"mode": "quick" if quick else "full", "file": source.name, "records": len(records),
                "tokenizer": "Llama-2 (tiny model's)", "template": TEMPLATE, "max_length": MAX_LENGTH,
                "packing": True}
    result = bench_report.header("data", settings)
    result["tools"] = {k: v["figures"] for k, v in tools.items()}
    result["ratios"] = ratios(result["tools"])
    return result


def ratios(tools: dict) -> dict:
    """xtune's records/s over TRL's, for every (processes, cache) case both measured."""
    out = {}
    for key, fig in tools.get("xtune", {}).items():
        other = tools.get("trl", {}).get(key)
        if other and other.get("records_per_s"):
            out[key] = fig["records_per_s"] / other["records_per_s"]
    return out


def worker(spec: dict) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    measure = _xtune if spec["arm"] == "xtune" else _trl_preparer(spec, tokenizer)
    figures = {}
    n = len(json.loads(Path(spec["data"]).read_text(encoding="utf-8")))
    for procs in spec["procs"]:
        cache = Path(spec["cache"]) / f"procs{procs}"
        for state in ("cold", "warm"):
            start = time.perf_counter()
            rows = measure(spec, tokenizer, procs, cache)
            seconds = time.perf_counter() - start
            tokens = sum(len(x) for x in rows["input_ids"])
            trained = sum(sum(1 for t in labels if t != -100) for labels in rows["labels"])
            figures[f"{procs}proc_{state}"] = {"seconds": seconds, "records": n, "rows": len(rows),
                                               "tokens": tokens, "trained_tokens": trained,
                                               "records_per_s": n / seconds, "tokens_per_s": tokens / seconds}
    return {"arm": spec["arm"], "figures": figures}


def _xtune(spec: dict, tokenizer, procs: int, cache: Path):
    from xtune.data import build_train_dataset
    from xtune.plugins import get_registry

    cfg = dict(dataset_map="alpaca", data_path=spec["data"], prompt_template=spec["template"],
               max_length=spec["max_length"], pack_to_max_length=True, num_proc=procs, seed=0,
               cache_dir=str(cache))
    return build_train_dataset(cfg, tokenizer, registry=get_registry(), progress=False)


def to_prompt_completion(record: dict) -> dict:
    """The alpaca -> conversational prompt/completion map a TRL user writes (same text as xtune's map)."""
    prompt = record["instruction"]
    if (record.get("input") or "").strip():
        prompt = f"{prompt}\n{record['input']}"
    return {"prompt": [{"role": "user", "content": prompt}],
            "completion": [{"role": "assistant", "content": record["output"]}]}


def _trl_preparer(spec: dict, tokenizer):
    import datasets
    from trl import SFTConfig, SFTTrainer

    from xtune.plugins import get_registry
    from xtune.templates.export import export_jinja

    tokenizer.chat_template = export_jinja(spec["template"], registry=get_registry())
    datasets.disable_progress_bars()
    args = SFTConfig(output_dir=str(Path(spec["cache"]) / "trainer"), packing=True,
                     max_length=spec["max_length"],
                     report_to="none", use_cpu=True)
    seed_rows = datasets.Dataset.from_list([to_prompt_completion(
        {"instruction": "Say hi.", "input": "", "output": "Hi."})] * 2)
    trainer = SFTTrainer(model=spec["model"], args=args, train_dataset=seed_rows, processing_class=tokenizer)

    def prepare(spec: dict, tokenizer, procs: int, cache: Path):
        raw = datasets.load_dataset("json", data_files=spec["data"], split="train", cache_dir=str(cache))
        conversational = raw.map(to_prompt_completion, remove_columns=raw.column_names,
                                 num_proc=procs if procs > 1 else None)
        args.dataset_num_proc = procs if procs > 1 else None
        return trainer._prepare_dataset(conversational, tokenizer, args, True, None, "train")

    return prepare


def markdown(result: dict) -> str:
    from bench_report import context_lines, table

    rows = []
    for key in result["tools"].get("xtune", {}):
        procs, state = key.split("_")
        for tool in ("xtune", "trl"):
            f = result["tools"].get(tool, {}).get(key)
            if f:
                rows.append([tool, procs.replace("proc", ""), state, f["records_per_s"], f["tokens_per_s"],
                             f["seconds"], f["rows"], f["trained_tokens"]])
        rows.append(["**ratio xtune ÷ TRL** (records/s)", procs.replace("proc", ""), state,
                     result["ratios"].get(key), None, None, None, None])
    return "\n".join(["## Preprocessing: xtune data pipeline vs TRL dataset preparation", "",
                      *context_lines(result), "",
                      table(["tool", "processes", "cache", "records/s", "tokens/s", "seconds", "packed rows",
                             "trained tokens"], rows), ""])
