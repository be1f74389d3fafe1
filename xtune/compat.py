"""The fixes mmengine 0.10.7 needs on torch 2.13 / deepspeed 0.19 (docs/compatibility.md says, for each,
what breaks, which upstream release would fix it, and when to delete it). Fix 1 (mmengine's pickled
MessageHub) is gone: checkpoints are safetensors + JSON and pickles are read with an explicit allow-list
(`xtune.checkpoint.store`, `xtune.checkpoint.trust`).

Each fix is a small function applied only by the code path that needs it, and each says which upstream
problem it works around. Nothing here patches a model class; the only global state touched is
mmengine's registries.
"""

from __future__ import annotations

import contextlib
import functools
import os


@functools.cache
def register_cpu_autocast_wrapper() -> str:
    """Fix 2 — `AmpOptimWrapper` asserts that CUDA/NPU/MLU is available, so bf16 training on CPU is refused.

    Mixed precision on CPU only needs `torch.autocast('cpu', dtype=torch.bfloat16)` around the forward pass
    (no loss scaling: bf16 has fp32's range). Registered in mmengine's OPTIM_WRAPPERS under the returned name.
    """
    import torch
    from mmengine.optim import OptimWrapper
    from mmengine.registry import OPTIM_WRAPPERS

    class CPUAutocastOptimWrapper(OptimWrapper):
        """OptimWrapper whose optim_context also enables CPU bf16 autocast."""

        def __init__(self, *args, dtype: str = "bfloat16", **kwargs):
            super().__init__(*args, **kwargs)
            self.cast_dtype = getattr(torch, dtype)

        @contextlib.contextmanager
        def optim_context(self, model):
            with super().optim_context(model), torch.autocast("cpu", dtype=self.cast_dtype):
                yield

    if "CPUAutocastOptimWrapper" not in OPTIM_WRAPPERS.module_dict:
        OPTIM_WRAPPERS.register_module(module=CPUAutocastOptimWrapper)
    return "CPUAutocastOptimWrapper"


def init_distributed_without_cuda(backend: str | None = None, use_deepspeed: bool = False) -> None:
    """Fix 3 — `launcher='pytorch'` on a CPU build dies in mmengine's `_init_dist_pytorch` on
    `torch.cuda.set_device` (`torch._C has no attribute '_cuda_setDevice'`).

    mmengine skips its own initialisation when a process group already exists, so we create it here from the
    torchrun environment (gloo on CPU, nccl on CUDA). DeepSpeed's `init_distributed` adopts an existing group.
    A single process without torchrun gets the RANK/WORLD_SIZE/MASTER_* variables DeepSpeed needs (else it
    looks for mpi4py). The DDP wrapper must then be built with `device_ids=None` (see `ddp_wrapper_cfg`).
    """
    import torch
    import torch.distributed as dist

    for var, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(var, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if use_deepspeed:
        import deepspeed

        if not torch.cuda.is_available():
            # The shm comm op is JIT-compiled (30-37 s) at every init_distributed on a fresh machine.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    if not dist.is_initialized():
        dist.init_process_group(backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"))
    if use_deepspeed:
        deepspeed.init_distributed(dist_backend=dist.get_backend())


def ddp_wrapper_cfg() -> dict:
    """The second half of fix 3: MMDistributedDataParallel with `device_ids=None` on CPU."""
    import torch

    if torch.cuda.is_available():
        return dict(type="MMDistributedDataParallel", find_unused_parameters=False)
    return dict(type="MMDistributedDataParallel", device_ids=None, find_unused_parameters=False)


@functools.cache
def fix_deepspeed_optimizer_registration() -> None:
    """Fix 4 — `DeepSpeedStrategy.__init__` calls `register_deepspeed_optimizers`, which imports
    `deepspeed.runtime.fp16.onebit` (removed in deepspeed 0.19.7) and, on a second strategy in the same
    process, raises `KeyError ... already registered`.

    We register the optimizers that still exist once, then make the strategy's call a no-op.
    """
    from mmengine._strategy import deepspeed as mm_deepspeed
    from mmengine.registry import OPTIMIZERS

    try:
        from deepspeed.ops.adam import DeepSpeedCPUAdam, FusedAdam
        from deepspeed.ops.lamb import FusedLamb
    except ImportError:  # pragma: no cover - deepspeed is a dependency
        return
    for cls in (DeepSpeedCPUAdam, FusedAdam, FusedLamb):
        if cls.__name__ not in OPTIMIZERS.module_dict:
            OPTIMIZERS.register_module(module=cls)
    mm_deepspeed.register_deepspeed_optimizers = lambda: ["DeepSpeedCPUAdam", "FusedAdam", "FusedLamb"]


def free_port() -> int:
    """A TCP port free on every interface now (the OS picks it): a single process's MASTER_PORT, and the
    launcher's suggestion when PORT is taken."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


@functools.cache
def deepspeed_strategy_with_resume_hooks(quiet: bool = False) -> str:
    """Fix 5 — `DeepSpeedStrategy.save_checkpoint` and `.resume` ignore their `callback` ("not supported
    yet"), so runner hooks never see `before_save_checkpoint` / `after_load_checkpoint` under DeepSpeed
    and cannot save or restore their state (RNG states, the loss history). A subclass, registered under
    the returned name, calls them with DeepSpeed's client state (the extra checkpoint dict)."""
    from mmengine._strategy import DeepSpeedStrategy
    from mmengine.registry import STRATEGIES

    from xtune.checkpoint.store import from_plain, to_plain
    from xtune.checkpoint.trust import check_deepspeed_folder

    class ResumeHookDeepSpeedStrategy(DeepSpeedStrategy):
        def save_checkpoint(self, filename, *, extra_ckpt=None, callback=None, **kwargs):
            extra_ckpt = {} if extra_ckpt is None else extra_ckpt
            if callback is not None:
                callback(extra_ckpt)
            # not a fix: the client state holds only data (no HistoryBuffer / numpy classes to unpickle)
            extra_ckpt = to_plain(extra_ckpt, lambda key, tensor: tensor)
            return super().save_checkpoint(filename, extra_ckpt=extra_ckpt, **kwargs)

        def resume(self, filename, *, callback=None, **kwargs):
            check_deepspeed_folder(filename)  # DeepSpeed's engine unpickles every file fully
            checkpoint = from_plain(super().resume(filename, **kwargs))
            if callback is not None:
                callback(checkpoint)
            return checkpoint

        def build_logger(self, *args, **kwargs):  # not a fix: the console is as quiet as the Runner's
            logger = super().build_logger(*args, **kwargs)
            if quiet:
                quiet_console(logger)
            return logger

    name = "QuietResumeHookDeepSpeedStrategy" if quiet else "ResumeHookDeepSpeedStrategy"
    ResumeHookDeepSpeedStrategy.__name__ = name
    if name not in STRATEGIES.module_dict:
        STRATEGIES.register_module(module=ResumeHookDeepSpeedStrategy, name=name)
    return name


def quiet_console(logger) -> None:
    """mmengine's console lines (environment report, config dump, hook table, its per-iteration line, its
    deprecation notes) stay in the log file; the console shows its errors and xtune's own lines (the
    `xtune` logger: progress, sample chats, checkpoints, warnings that call for action)."""
    import logging

    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.ERROR)
