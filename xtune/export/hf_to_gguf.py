"""`xtune convert hf_to_gguf MODEL OUT.gguf`: a Hugging Face model (or base + adapter) as one GGUF file.

llama.cpp, Ollama and LM Studio run GGUF files. Other fine-tuning tools make them by building llama.cpp on
the user's machine; here the file is written with the `gguf` package from PyPI, the writer llama.cpp
itself maintains, so nothing is compiled. The model is loaded with transformers (an adapter merged on the
fly with the same code as `xtune convert merge`), its tokenizer and chat template are written as llama.cpp
reads them (`gguf_vocab`), and every tensor is renamed with gguf's own name map, put in the layout
llama.cpp's graph expects (`gguf_arch`) and stored in the chosen type:

    f32, f16, bf16   every matrix in that type
    q8_0, q4_0       matrices quantised with gguf's own quantisers (blocks of 32 along a row); a matrix whose
                     rows are not a multiple of 32 stays f16, and under q4_0 the output projection (or the
                     tied embedding that serves as it) is q8_0, the layer that suffers most from 4 bits
    q6_k, q5_k_m, q5_k_s, q4_k_m, q4_k_s, q3_k_m, q2_k
                     llama.cpp's k-quant mixes: its per-tensor choice of type (`gguf_mix`) and its
                     reference block encoders written in numpy (`gguf_kquants`), byte for byte what
                     `llama-quantize` writes without an importance matrix
In every type, vectors (norms, biases) stay f32, as llama.cpp computes with them.

Tensors are converted one at a time while the file is written (tensor infos first, then the data in the
same order), so memory holds the model plus one tensor, not a second copy of the model.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from xtune.errors import UsageError
from xtune.fileio import atomic_path, check_output_file

log = logging.getLogger("xtune")

OUTTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0",
            "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s", "q3_k_m", "q2_k")


@dataclass
class PlannedTensor:
    """A tensor of the file: its GGUF name, shape, storage type and where its float32 data comes from."""

    name: str
    shape: tuple[int, ...]
    qtype: object  # gguf.GGMLQuantizationType
    source: object  # a torch tensor, or a numpy array made here

    def encode(self, config, arch):
        import numpy as np
        from gguf import GGMLQuantizationType as Q
        from gguf.quants import quantize

        from xtune.export.gguf_arch import convert_tensor

        data = self.source
        if not isinstance(data, np.ndarray):
            data = data.detach().float().cpu().numpy()
        data = convert_tensor(self.name, data.astype(np.float32, copy=False), config, arch)
        if self.qtype == Q.F32:
            return data
        if self.qtype == Q.F16:
            return data.astype(np.float16)
        if self.qtype.name.endswith("_K"):  # gguf has no k-quant encoder
            from xtune.export.gguf_kquants import quantize_k

            return quantize_k(data, self.qtype)
        return quantize(data, self.qtype)

    def nbytes_and_dtype(self):
        import numpy as np
        from gguf import GGMLQuantizationType as Q
        from gguf.quants import quant_shape_to_byte_shape

        if self.qtype in (Q.F32, Q.F16):
            dtype = np.float32 if self.qtype == Q.F32 else np.float16
            return self.shape, int(np.prod(self.shape)) * np.dtype(dtype).itemsize, dtype
        byte_shape = quant_shape_to_byte_shape(self.shape, self.qtype)
        return byte_shape, int(np.prod(byte_shape)), np.uint8


def storage_type(name: str, shape: tuple[int, ...], outtype: str, output_name: str):
    """The GGML type a tensor is stored in under `outtype` (the rules in the module docstring)."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    if len(shape) == 1 or name == "rope_freqs.weight":
        return Q.F32
    wanted = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[outtype]
    if outtype == "q4_0" and name == output_name:
        wanted = Q.Q8_0
    if wanted in (Q.Q8_0, Q.Q4_0) and shape[-1] % GGML_QUANT_SIZES[wanted][0]:
        return Q.F16
    return wanted


def plan_tensors(llm, arch, outtype: str) -> list[PlannedTensor]:
    """Every tensor of the file, named by gguf's tensor map; a tensor with no place there is an error."""
    import gguf

    from xtune.export.gguf_arch import extra_tensors
    from xtune.export.gguf_mix import KQUANT_OUTTYPES, kquant_type, mix_model

    config = llm.config
    arch_enum = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}[arch.name]
    names = gguf.get_tensor_name_map(arch_enum, int(config.num_hidden_layers))
    tied = arch.always_tied or bool(getattr(config, "tie_word_embeddings", False))
    sources = {}
    for hf_name, tensor in llm.state_dict().items():
        if "rotary_emb" in hf_name or (tied and hf_name.startswith("lm_head.")):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise UsageError(f"tensor {hf_name!r} has no place in llama.cpp's {arch.name!r} graph",
                             hint="this variant of the architecture cannot be written as GGUF by xtune")
        sources[name] = tensor
    sources.update(extra_tensors(config))
    output_name = "token_embd.weight" if tied else "output.weight"
    planned = []
    for name, data in sources.items():
        shape = tuple(data.shape)
        if outtype in KQUANT_OUTTYPES:
            qtype = kquant_type(name, shape, outtype, mix_model(config, tied))
        else:
            qtype = storage_type(name, shape, outtype, output_name)
        planned.append(PlannedTensor(name, shape, qtype, data))
    return planned


def write_gguf(path: Path, llm, tokenizer, tokenizer_dir: Path, arch, outtype: str, name: str) -> dict:
    """Write the whole file at `path`; returns counts of tensors by storage type."""
    import gguf
    import numpy as np

    from xtune.export.gguf_arch import write_hparams
    from xtune.export.gguf_mix import KQUANT_OUTTYPES
    from xtune.export.gguf_vocab import add_tokenizer

    config = llm.config
    # gguf's progress lines name our temporary file, and its tokenizer heuristics warn about settings that
    # add_tokenizer overrides anyway: only its errors are shown
    gguf_log = logging.getLogger("gguf")
    level = gguf_log.level
    gguf_log.setLevel(logging.ERROR)
    writer = gguf.GGUFWriter(path, arch.name)
    try:
        writer.add_name(name)
        write_hparams(writer, config, arch)
        file_type = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0",
                     "q4_0": "MOSTLY_Q4_0", **{k: v[0] for k, v in KQUANT_OUTTYPES.items()}}[outtype]
        writer.add_file_type(int(getattr(gguf.LlamaFileType, file_type)))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        rows = int(llm.get_input_embeddings().weight.shape[0])
        add_tokenizer(writer, tokenizer_dir, tokenizer, n_vocab=rows)
        plan = plan_tensors(llm, arch, outtype)
        for tensor in plan:
            shape, nbytes, dtype = tensor.nbytes_and_dtype()
            raw = tensor.qtype if dtype is np.uint8 else None  # quantised: the shape given is in bytes
            writer.add_tensor_info(tensor.name, shape, np.dtype(dtype), nbytes, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in plan:
            writer.write_tensor_data(tensor.encode(config, arch))
    finally:
        writer.close()
        gguf_log.setLevel(level)
    counts: dict[str, int] = {}
    for tensor in plan:
        counts[tensor.qtype.name] = counts.get(tensor.qtype.name, 0) + 1
    return counts


def load_source(model: str, adapter: str | None, dtype: str, source: str, *, registry):
    """(model, tokenizer, info) of the source: a model folder or hub id, or base + adapter merged, loaded as
    `xtune convert merge` loads them."""
    from xtune.export.merge import check_base, load_merged
    from xtune.export.model_card import read_info
    from xtune.models.build import load_for_inference

    model, adapter = resolve_source_model(model, adapter)
    if adapter:
        return load_merged(model, adapter, registry=registry, dtype=dtype, source=source)
    check_base(model, source, registry=registry)
    stored = "checkpoint" if dtype == "auto" else dtype  # 'auto' here means the checkpoint's own dtype
    llm, tokenizer = load_for_inference(model, registry=registry, source=source, dtype=stored)
    return llm, tokenizer, read_info(model)


def resolve_source_model(model: str, adapter: str | None) -> tuple[str, str | None]:
    """(base, adapter): a MODEL that is itself an adapter folder (`WORK_DIR/hf` after `xtune train`, or
    pth_to_hf's output) stands for the base its adapter_config.json names, with that adapter."""
    from xtune.models.adapters import adapter_base, is_adapter_folder

    if adapter or not is_adapter_folder(model):
        return model, adapter
    base = adapter_base(model)
    if not base:
        raise UsageError(f"adapter {str(model)!r} does not name its base model",
                         hint="pass the base as MODEL and the adapter with --adapter")
    return str(base), str(model)


def hf_to_gguf(model: str, out: str | Path, *, registry, outtype: str = "f16", adapter: str | None = None,
               dtype: str = "auto", force: bool = False, source: str = "auto") -> Path:
    """Write `model` (with `adapter` merged, when given) to the GGUF file `out`; returns `out`. A MODEL that
    is itself an adapter folder is merged into the base its config names."""
    from xtune.export.gguf_arch import gguf_arch
    from xtune.export.merge import check_base
    from xtune.export.tokenizer import save_tokenizer
    from xtune.models.adapters import check_adapter_dir, refuse_reward_model

    if outtype not in OUTTYPES:
        raise UsageError(f"--outtype {outtype!r} is not a GGUF type xtune writes",
                         hint=f"use {', '.join(OUTTYPES)}")
    model, adapter = resolve_source_model(model, adapter)
    out = check_output_file(out, force, ".gguf", inputs=(model, adapter))
    if adapter:
        check_adapter_dir(adapter)
    config = check_base(model, source, registry=registry)  # the config alone: a refusal loads no weight
    refuse_reward_model(config, adapter, str(adapter or model))
    arch = gguf_arch(config)
    llm, tokenizer, info = load_source(model, adapter, dtype, source, registry=registry)
    name = str(info.get("recipe") or Path(str(model)).name)
    with tempfile.TemporaryDirectory(prefix="xtune-gguf-tokenizer-") as tokenizer_dir:
        save_tokenizer(tokenizer, tokenizer_dir, registry=registry)
        llm.config.to_json_file(str(Path(tokenizer_dir, "config.json")))  # fallback special ids
        with atomic_path(out) as tmp:
            counts = write_gguf(tmp, llm, tokenizer, Path(tokenizer_dir), arch, outtype, name)
    log.info("converted %s -> %s (%s; tensors: %s)", model, out, arch.name,
             ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    return out
