"""The benchmark harness (tools/bench*.py): writers, ratios, fairness of the inputs, and the `cli` subcommand.

The long measurements themselves are not run here; what is tested is what makes their figures
trustworthy: every arm trains on the same token ids, the held-out score is the plain token-weighted
cross-entropy, the xtune arm's overrides are accepted by the engine, and the Markdown section rewrite
leaves the rest of docs/benchmarks.md alone.
"""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO, shared_path

sys.path.insert(0, str(REPO / "tools"))

import bench  # noqa: E402
import bench_data  # noqa: E402
import bench_report  # noqa: E402
import bench_train  # noqa: E402

from xtune.plugins import get_registry


def test_replace_section_appends_then_rewrites_only_its_block():
    text = "# Benchmarks\n\nHand-written notes.\n"
    once = bench_report.replace_section(text, "cli", "table one")
    assert once.startswith(
        text.rstrip()) and "<!-- bench:cli:begin -->\ntable one\n<!-- bench:cli:end -->" in once
    both = bench_report.replace_section(once, "train", "train table")
    again = bench_report.replace_section(both, "cli", "table two")
    assert "table one" not in again and "table two" in again
    assert "train table" in again and "Hand-written notes." in again
    assert again.count("<!-- bench:cli:begin -->") == 1


def test_replace_section_refuses_a_block_without_its_end_marker():
    with pytest.raises(ValueError, match="bench:cli:end"):
        bench_report.replace_section("<!-- bench:cli:begin -->\nold", "cli", "new")


def test_table_cells():
    assert bench_report.fmt(None) == "–"
    assert bench_report.fmt(12345) == "12,345"
    assert bench_report.fmt(0.123456) == "0.123"
    assert bench_report.fmt(98765.4) == "98,765"
    assert bench_report.fmt(True) == "yes"
    lines = bench_report.table(["a", "b"], [[1, 2.5]]).splitlines()
    assert lines == ["| a | b |", "|---|---|", "| 1 | 2.5 |"]


def _arm(tokens_per_s, loss):
    return {"tokens_per_s": tokens_per_s, "heldout_loss": loss, "label_tokens": 100, "rows": 2}


def test_summarize_ratios_and_heldout_gap():
    arms = {"base": {"heldout_loss": 10.0}, "xtune": _arm(300.0, 5.0), "trl": _arm(100.0, 5.1),
            "trl_packed": _arm(200.0, 5.6)}
    run = bench_train.summarize({"name": "p"}, arms)
    assert run["ratio"] == pytest.approx(3.0) and run["ratio_packed"] == pytest.approx(1.5)
    assert run["heldout_gap"]["trl"] == pytest.approx(0.02)
    assert run["heldout_gap"]["trl_packed"] == pytest.approx(0.12)
    assert run["heldout_comparable"] is False  # 12 % is not within 5 %
    assert run["heldout_improvement"] == {"xtune": 5.0, "trl": pytest.approx(4.9),
                                          "trl_packed": pytest.approx(4.4)}
    arms["trl_packed"]["heldout_loss"] = 4.9
    assert bench_train.summarize({"name": "p"}, arms)["heldout_comparable"] is True


def test_markdown_warns_when_an_arm_learned_nothing():
    arms = {"base": {"heldout_loss": 10.0}, "xtune": _arm(300.0, 10.0), "trl": _arm(100.0, 9.9)}
    settings = dict(model="m", method="full", data="d.json", train_records=1, heldout_records=1, max_length=8,
                    lr=1.0, seed=0, epochs=1)
    result = bench_report.header("train", {})
    result["runs"] = [bench_train.summarize(dict(settings, name="p"), arms)]
    text = bench_train.markdown(result)
    assert "**Warning:** xtune (recipe defaults, packing) did not lower the held-out loss" in text
    assert "TRL SFTTrainer defaults did not" not in text


def test_summarize_without_a_trl_arm_has_no_ratio():
    run = bench_train.summarize({"name": "p"}, {"xtune": _arm(300.0, 5.0)})
    assert run["ratio"] is None and run["heldout_comparable"] is False


def test_train_markdown_names_every_arm_and_the_ratios():
    arms = {"xtune": _arm(300.0, 5.0), "trl": _arm(100.0, 5.1), "trl_packed": _arm(200.0, 5.0)}
    settings = dict(model="/m/llama2_tiny", method="full", data="/d/alpaca.json", train_records=10,
                    heldout_records=2, max_length=64, lr=1e-3, seed=0, epochs=1)
    run = bench_train.summarize(dict(settings, name="tiny"), arms)
    result = bench_report.header("train", {"mode": "quick"})
    result["runs"] = [run]
    text = bench_train.markdown(result)
    assert "**ratio** (xtune ÷ TRL default, trained tokens/s) = 3.00" in text
    assert "**ratio_packed** (xtune ÷ TRL packing) = 1.50" in text
    for label in ("xtune (recipe defaults, packing)", "TRL SFTTrainer defaults",
                  "TRL SFTTrainer packing=True"):
        assert label in text


def test_split_records_keeps_train_and_heldout_apart(tmp_path):
    src = tmp_path / "all.json"
    src.write_text(json.dumps([{"instruction": f"q{i}", "output": f"a{i}"} for i in range(10)]))
    train, heldout = bench_train.split_records(str(src), 6, 3, tmp_path / "out")
    train_ids = [r["instruction"] for r in json.loads(train.read_text())]
    held_ids = [r["instruction"] for r in json.loads(heldout.read_text())]
    assert train_ids == [f"q{i}" for i in range(6)] and held_ids == ["q7", "q8", "q9"]
    train, heldout = bench_train.split_records(str(src), 50, 3,
                                               tmp_path / "out2")  # too many asked: no overlap
    assert len(json.loads(train.read_text())) == 7


def test_xtune_arm_overrides_are_accepted_by_the_engine(tmp_path):
    config = pytest.importorskip("xtune.recipe")
    from xtune.plugins import get_registry
    from xtune.recipe_files import resolve_recipe

    spec = dict(model="/some/model", train=str(tmp_path / "t.json"), max_length=128, lr=1e-3, epochs=1,
                seed=3,
                template="llama2_chat", recipe="llama2_7b_chat_full_alpaca_e3", work_dir=str(tmp_path / "w"))
    argv = bench_train.xtune_argv(spec)
    assert argv[:2] == ["train", spec["recipe"]]
    options = argv[argv.index("--cfg-options") + 1:]
    cfg = config.load_recipe(resolve_recipe(spec["recipe"], get_registry()), options)
    assert cfg.train_dataset.max_length == 128 and cfg.optim_wrapper.optimizer.lr == 1e-3
    sequences = cfg.train_dataloader.batch_size * cfg.optim_wrapper.accumulative_counts
    assert sequences == bench_train.SEQUENCES_PER_STEP
    assert cfg.train_dataset.pack_to_max_length is True  # the recipe's default path: packing on
    assert cfg.export_hf is False and cfg.evaluate_chat.inputs == []


def test_trl_arm_gets_the_same_token_ids_as_xtune(tmp_path):
    """Fairness: TRL's prompt+completion text tokenizes (as TRL does, BOS added) to xtune's token sequence."""
    model_dir = shared_path("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")
    from transformers import AutoTokenizer

    from xtune.data import build_train_dataset

    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
                                {"instruction": "Name a colour.", "input": "Be brief.",
                                 "output": "Blue, of course."}]))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    spec = dict(train=str(data), template="llama2_chat")
    records = bench_train.prompt_completion_records(spec, tokenizer)
    cfg = dict(dataset_map="alpaca", data_path=str(data), prompt_template="llama2_chat", max_length=256,
               pack_to_max_length=False)
    rows = build_train_dataset(cfg, tokenizer, progress=False, use_cache=False, registry=get_registry())
    for record, row in zip(records, rows, strict=True):
        assert not record["prompt"].startswith(tokenizer.bos_token)  # the tokenizer adds BOS itself
        ids = tokenizer(record["prompt"] + record["completion"])["input_ids"]
        # SentencePiece's word-start marker on the first prompt piece ("▁[" for "[") is the one difference:
        # same length, same ids everywhere else, so the same compute and the same trained tokens.
        assert len(ids) == len(row["input_ids"])
        assert [i for i, (a, b) in enumerate(zip(ids, row["input_ids"], strict=True)) if a != b] in ([], [1])
        prompt_len = len(tokenizer(record["prompt"])["input_ids"])
        assert len(ids) - prompt_len == sum(1 for t in row["labels"] if t != -100)


def test_heldout_loss_is_the_token_weighted_cross_entropy():
    torch = pytest.importorskip("torch")
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    rows = [{"input_ids": [1, 5, 6, 7, 8], "labels": [-100, -100, 6, 7, 8]},
            {"input_ids": [1, 9, 10], "labels": [-100, -100, 10]}]
    got = bench_train.heldout_loss(model, rows)
    total = 0.0
    for row in rows:  # HF's mean loss per row, weighted by the row's trained tokens
        out = model(input_ids=torch.tensor([row["input_ids"]]), labels=torch.tensor([row["labels"]]))
        total += float(out.loss.detach()) * sum(1 for t in row["labels"][1:] if t != -100)
    assert got == pytest.approx(total / 4, rel=1e-5)
    assert model.training  # restored


def test_data_map_for_trl_matches_xtunes_alpaca_text():
    from xtune.data.formats import alpaca

    record = {"instruction": "Solve it.", "input": "2+2", "output": "4"}
    messages = alpaca(record)
    converted = bench_data.to_prompt_completion(record)
    assert converted["prompt"][0]["content"] == messages[-2]["content"]
    assert converted["completion"][0]["content"] == messages[-1]["content"]
    assert bench_data.to_prompt_completion({"instruction": "Hi", "input": " ", "output": "Yo"})["prompt"][0][
        "content"] == "Hi"


def test_data_ratios_pair_matching_cases():
    tools = {"xtune": {"1proc_cold": {"records_per_s": 300.0}, "1proc_warm": {"records_per_s": 9000.0}},
             "trl": {"1proc_cold": {"records_per_s": 100.0}}}
    assert bench_data.ratios(tools) == {"1proc_cold": pytest.approx(3.0)}


@pytest.mark.integration
def test_cli_subcommand_writes_json_and_its_doc_section(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nkept text\n")
    out = tmp_path / "cli.json"
    assert bench.main(["cli", "--runs", "1", "--json", str(out), "--doc", str(doc)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "cli" and result["settings"]["runs"] == 1
    assert set(result["commands"]) == set(bench.CLI_COMMANDS)
    assert all(f["median_s"] > 0 for f in result["commands"].values())
    assert {"python", "torch", "transformers"} <= set(result["versions"])
    text = doc.read_text()
    assert "kept text" in text and "<!-- bench:cli:begin -->" in text and "xtune list-cfg" in text


@pytest.mark.integration
def test_time_command_reports_a_failing_command():
    with pytest.raises(RuntimeError, match="exited 3"):
        bench.time_command([sys.executable, "-c", "import sys; sys.exit(3)"], runs=1)


def test_parser_has_the_three_subcommands_with_quick_and_json():
    parser = bench.build_parser()
    for name in ("train", "data", "cli"):
        args = parser.parse_args([name, "--quick", "--json", "x.json"])
        assert args.quick and args.json == "x.json"
    assert parser.parse_args(["train", "--device", "cuda"]).device == "cuda"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--device", "tpu"])


def test_doc_sections_exist_for_every_subcommand():
    for name in bench.SUBCOMMANDS:  # in docs/benchmarks.md, or the page bench.DOCS names (docs/serve.md)
        page = bench.DOCS.get(name, REPO / "docs" / "benchmarks.md")
        text = page.read_text(encoding="utf-8")
        begin, end = bench_report.markers(name)
        assert begin in text and end in text, f"{page.relative_to(REPO)} lacks the {name} section"


def test_train_and_data_refuse_to_start_without_the_shared_data(monkeypatch, tmp_path, capsys):
    pytest.importorskip("trl")
    monkeypatch.setenv("XTUNE_SHARED_DIR", str(tmp_path / "absent"))
    assert bench.missing_requirements("cli") is None
    assert "XTUNE_SHARED_DIR" in bench.missing_requirements("train")
    assert bench.main(["data", "--quick", "--no-doc"]) == 2
    assert capsys.readouterr().err.startswith("Error: the shared data folder")


def test_estimate_rows_and_markdown_report_every_row_against_the_goal():
    import bench_estimate as be

    rows = be.rows("cpu", quick=True)
    assert [r["method"] for r in rows] == ["full", "lora", "qlora"]
    assert all("max_steps=3" in r["cfg_options"] and r["recipe"].startswith("llama2_7b_") for r in rows)
    assert {r["method"] for r in be.rows("cuda", quick=True)} == {"full", "lora", "qlora"}
    gib = 2**30
    result = bench_report.header("estimate", {"device": "cpu"})
    first = {"peak": 1.0 * gib, "before_model": 0.5 * gib, "labelled_share": 0.4}
    result["rows"] = [dict(rows[0], measured=first, estimate={"peak": 1.1 * gib}, error=0.1),
                      dict(rows[1], measured={"peak": 1.0 * gib}, estimate={"peak": 0.8 * gib}, error=-0.2)]
    result["within_goal"] = False
    text = be.markdown(result)
    assert "| llama2-tiny | full | 40% | 0.5 | 1 | 1.1 | +10.0% | yes |" in text
    assert "-20.0% | NO |" in text and "NOT met" in text
    assert bench.build_parser().parse_args(["estimate", "--device", "cuda"]).device == "cuda"


def test_serve_table_compares_with_the_mean_of_the_two_baselines():
    import bench_serve

    def figures(rate, cpu):
        return {"requests_per_s": rate, "tokens_per_s": rate * 30, "p50_s": 1.0, "p95_s": 2.0,
                "cpu_s_per_request": cpu}

    result = bench_report.header("serve", {})
    result.update(baseline=figures(1.0, 2.0), baseline_after=figures(3.0, 2.0),
                  levels=[{"concurrency": 16, **figures(6.0, 0.5)}],
                  server={"batches": 3, "largest_batch": 8})
    text = bench_serve.markdown(result)
    assert "| `xtune serve`, 16 concurrent client(s) | 16 | 6 | 180 | 1 | 2 | 3 | 0.5 | 4 |" in text
    assert "3 batches, the largest of 8 requests" in text
