"""`xtune convert pth_to_hf | merge | gguf_to_hf | hf_to_gguf`: training output to Hugging Face folders, and
GGUF files to and from them.

Every form writes OUT atomically (a temporary folder or file renamed into place when complete) and refuses
an existing OUT unless `--force` is given. The work is in `xtune.export`; this module only parses.
"""

from __future__ import annotations

_DTYPES = ["auto", "float32", "bfloat16", "float16"]


def add_parser(subparsers, common):
    p = subparsers.add_parser("convert", parents=[common],
                              help="checkpoint -> HF adapter/model; merge; GGUF <-> HF",
                              description="Turn training output into Hugging Face folders (safetensors).")
    sub = p.add_subparsers(title="conversions", metavar="KIND")
    p.set_defaults(func=lambda args: _missing_kind(p))
    _add_pth_to_hf(sub, common)
    _add_merge(sub, common)
    _add_gguf_to_hf(sub, common)
    _add_hf_to_gguf(sub, common)


def _add_pth_to_hf(sub, common) -> None:
    pth = sub.add_parser("pth_to_hf", parents=[common], help="a training checkpoint -> adapter or full model",
                         description="Convert an `xtune train` checkpoint (the iter_N.pth folder, an "
                                     "older iter_N.pth file, or a DeepSpeed folder) into a PEFT adapter "
                                     "folder, or a full model for full / freeze tuning, with the tokenizer, "
                                     "the recipe's chat template and a model card.")
    pth.add_argument("recipe", metavar="RECIPE_OR_PATH", help="the recipe the checkpoint was trained with")
    pth.add_argument("checkpoint", metavar="CHECKPOINT",
                     help="WORK_DIR/iter_N.pth (xtune's or DeepSpeed's folder, or an older file)")
    pth.add_argument("out", metavar="OUT", help="output folder")
    pth.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                     help="the same overrides as the training run (e.g. pretrained_model_name_or_path=DIR)")
    pth.add_argument("--dtype", choices=_DTYPES[1:], help="cast a full model to this precision before saving")
    pth.add_argument("--trust-checkpoint", action="store_true",
                     help="open a pickled checkpoint without restrictions (it can run code: only for "
                          "checkpoints from someone you trust)")
    _common_out(pth)
    pth.set_defaults(func=_run_pth_to_hf)


def _add_merge(sub, common) -> None:
    merge = sub.add_parser("merge", parents=[common], help="fold an adapter into its base model",
                           description="Merge a PEFT adapter into a full- or half-precision base model and "
                                       "save a standalone model (sharded safetensors) with tokenizer and "
                                       "chat template.")
    merge.add_argument("base", metavar="BASE", help="base model: folder, hub id or modelscope://ID")
    merge.add_argument("adapter", metavar="ADAPTER", help="adapter folder (from pth_to_hf or WORK_DIR/hf)")
    merge.add_argument("out", metavar="OUT", help="output folder")
    merge.add_argument("--dtype", default="auto", choices=_DTYPES,
                       help="precision to load the base and save the result in (auto: the base's own)")
    merge.add_argument("--prompt-template", metavar="NAME",
                       help="store this xtune template as the chat template (default: the adapter's)")
    merge.add_argument("--format", dest="layout", default="native", choices=["native", "original"],
                       help="native: the transformers architecture xtune trained (default; vLLM, GGUF read "
                            "it); original: a legacy hub-code base's own layout and config (InternLM, "
                            "Baichuan, ChatGLM), for LMDeploy and the family's tools")
    _common_out(merge)
    merge.set_defaults(func=_run_merge)


def _add_gguf_to_hf(sub, common) -> None:
    gguf = sub.add_parser("gguf_to_hf", parents=[common], help="a GGUF file -> plain HF folder",
                          description="Dequantise a GGUF model into a Hugging Face folder (config, "
                                      "safetensors, tokenizer with its chat template).")
    gguf.add_argument("gguf", metavar="GGUF", help="path to a .gguf file")
    gguf.add_argument("out", metavar="OUT", help="output folder")
    gguf.add_argument("--dtype", default="bfloat16", choices=_DTYPES[1:],
                      help="precision of the saved weights")
    _common_out(gguf)
    gguf.set_defaults(func=_run_gguf)


def _add_hf_to_gguf(sub, common) -> None:
    to_gguf = sub.add_parser("hf_to_gguf", parents=[common],
                             help="an HF model (or base + adapter) -> GGUF file",
                             description="Write a model as one GGUF file for llama.cpp / Ollama (no "
                                         "llama.cpp build needed), with its tokenizer and chat template.")
    to_gguf.add_argument("model", metavar="MODEL", help="model folder or hub id (the base, with --adapter), "
                                                         "or an adapter folder such as WORK_DIR/hf")
    to_gguf.add_argument("out", metavar="OUT.gguf", help="output file")
    to_gguf.add_argument("--outtype", default="f16",
                         choices=["f32", "f16", "bf16", "q8_0", "q4_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m",
                                  "q4_k_s", "q3_k_m", "q2_k"],
                         help="storage type of the weight matrices (default f16); the k-quants are "
                              "llama.cpp's mixes of the same name")
    to_gguf.add_argument("--adapter", metavar="DIR", help="a PEFT adapter to merge into MODEL on the fly")
    to_gguf.add_argument("--dtype", default="auto", choices=_DTYPES,
                         help="precision to load (and merge) in before converting (auto: the model's own)")
    to_gguf.add_argument("--check", action="store_true",
                         help="read the file back with transformers and compare its logits with the source's")
    to_gguf.add_argument("--ollama", action="store_true",
                         help="also write an Ollama Modelfile beside OUT (FROM, the chat template in "
                              "Ollama's form, stop words, default system prompt)")
    to_gguf.add_argument("--ollama-template", metavar="NAME",
                         help="the xtune template the Modelfile translates (implies --ollama; default: "
                              "the one the model's chat template was exported from)")
    to_gguf.add_argument("--force", action="store_true", help="replace OUT if it exists")
    to_gguf.set_defaults(func=_run_hf_to_gguf)


def _common_out(p) -> None:
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")


def _missing_kind(parser) -> int:
    from xtune.errors import UsageError

    raise UsageError("xtune convert: say what to convert: pth_to_hf, merge, gguf_to_hf or hf_to_gguf",
                     hint="see 'xtune convert --help'")


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")


def _run_pth_to_hf(args) -> int:
    _setup_logging()
    from xtune.checkpoint.trust import trusting
    from xtune.export.pth_to_hf import pth_to_hf
    from xtune.plugins import get_registry

    with trusting(args.trust_checkpoint):
        out = pth_to_hf(args.recipe, args.checkpoint, args.out, registry=get_registry(),
                        cfg_options=args.cfg_options, force=args.force, max_shard_size=args.max_shard_size,
                        dtype=args.dtype)
    print(f"wrote {out}")
    return 0


def _run_merge(args) -> int:
    _setup_logging()
    from xtune.export.merge import merge
    from xtune.plugins import get_registry

    out = merge(args.base, args.adapter, args.out, registry=get_registry(), dtype=args.dtype,
                max_shard_size=args.max_shard_size, force=args.force, prompt_template=args.prompt_template,
                layout=args.layout)
    print(f"wrote {out}")
    return 0


def _run_gguf(args) -> int:
    _setup_logging()
    from xtune.export.gguf import gguf_to_hf
    from xtune.plugins import get_registry

    out = gguf_to_hf(args.gguf, args.out, registry=get_registry(), dtype=args.dtype, force=args.force,
                     max_shard_size=args.max_shard_size)
    print(f"wrote {out}")
    return 0


def _run_hf_to_gguf(args) -> int:
    _setup_logging()
    from xtune.export.hf_to_gguf import hf_to_gguf
    from xtune.plugins import get_registry

    registry = get_registry()
    ollama = args.ollama or args.ollama_template is not None
    if ollama:
        _check_ollama(args, registry)
    out = hf_to_gguf(args.model, args.out, registry=registry, outtype=args.outtype, adapter=args.adapter,
                     dtype=args.dtype, force=args.force)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
    if ollama:
        from xtune.export.ollama import write_modelfile

        modelfile = write_modelfile(out, registry=registry, template=args.ollama_template, force=True)
        print(f"wrote {modelfile} (ollama create NAME -f {modelfile})")
    if args.check:
        from xtune.export.gguf_check import check_gguf

        check = check_gguf(args.model, out, registry=registry, adapter=args.adapter, dtype=args.dtype)
        print(check.summary())
    return 0


def _check_ollama(args, registry) -> None:
    """--ollama's refusals that need no conversion: a Modelfile in the way, a template without Ollama form."""
    from xtune.export.ollama import check_modelfile_free, ollama_template

    check_modelfile_free(args.out, args.force)
    if args.ollama_template:
        ollama_template(args.ollama_template, registry=registry)
