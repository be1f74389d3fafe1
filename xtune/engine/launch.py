"""Starting several processes the way XTuner users expect: `NPROC_PER_NODE=N xtune train ...`
(plus NNODES, NODE_RANK, ADDR, PORT for several machines) runs the same command under torch's elastic
launcher (what `torchrun` is); `--launcher slurm` reads SLURM's variables; torchrun and the deepspeed
launcher work directly.

xtune launches itself rather than handing over to the `torchrun` command so that a multi-process run fails
like a single-process one: the recipe, the work dir and the data are checked once before any process
starts (`check` below: a user error is the same one `Error:` line and exit 2); the settings of the launch
(process count, port) are checked here; and when a process fails, every other one is stopped within
seconds and the launcher prints the first failure's own `Error:` line (each process records its error in
a file, `XTUNE_RANK_ERRORS`) with its exit code, instead of torch's multi-line failure report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

from xtune.compat import free_port  # noqa: F401 - the launcher's hint; tests pick ports with it
from xtune.errors import UsageError

RANK_ERRORS = "XTUNE_RANK_ERRORS"  # a folder: each process that fails writes rank<N>.json there


def under_launcher() -> bool:
    """True inside a process started by torchrun / the deepspeed launcher / slurm (srun)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _count(env: dict[str, str], name: str) -> int:
    value = env.get(name, "1") or "1"
    if not value.strip().isdigit() or int(value) < 1:
        raise UsageError(f"{name}={value!r} is not a number of {'processes' if 'PROC' in name else 'nodes'}",
                         hint=f"set {name} to a positive whole number, e.g. {name}=2")
    return int(value)


def torchrun_args(env: dict[str, str]) -> list[str] | None:
    """torchrun's arguments for NPROC_PER_NODE / NNODES / NODE_RANK / ADDR / PORT, or None for one process."""
    nproc, nnodes = _count(env, "NPROC_PER_NODE"), _count(env, "NNODES")
    if nproc <= 1 and nnodes <= 1:
        return None
    node_rank = env.get("NODE_RANK", "0") or "0"
    if not node_rank.isdigit() or int(node_rank) >= nnodes:
        raise UsageError(f"NODE_RANK={node_rank!r} must be a whole number below NNODES={nnodes}",
                         hint="number the nodes 0 .. NNODES-1; node 0 runs at ADDR")
    return [f"--nproc_per_node={nproc}", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
            f"--master_addr={env.get('ADDR', '127.0.0.1')}", f"--master_port={_port(env)}"]


def torchrun_command(argv: list[str], env: dict[str, str]) -> list[str] | None:
    """The equivalent `torchrun` command line (shown in the docs and by --debug), or None."""
    args = torchrun_args(env)
    if args is None:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", *args, "-m", "xtune", "train", *argv]
    return cmd + ([] if "--launcher" in argv else ["--launcher", "pytorch"])


def _port(env: dict[str, str]) -> int:
    value = env.get("PORT", "29500") or "29500"
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise UsageError(f"PORT={value!r} is not a port number",
                         hint="set PORT to a free port, e.g. PORT=29500")
    return int(value)


# ------------------------------------------------------------------------------- checks before start
def check_launch(env: dict[str, str]) -> None:
    """What would make the launch fail or crawl, said in one line before anything starts."""
    nproc = _count(env, "NPROC_PER_NODE")
    from xtune.hardware import available_cpus, on_cuda

    if on_cuda():
        import torch

        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise UsageError(f"NPROC_PER_NODE={nproc} but this machine has {gpus} GPU(s): one process each",
                             hint=f"set NPROC_PER_NODE={gpus} or fewer")
    elif nproc > available_cpus():
        raise UsageError(f"NPROC_PER_NODE={nproc} but this process may use {available_cpus()} CPU core(s) "
                         "and there is no GPU: each process needs a core of its own",
                         hint=f"set NPROC_PER_NODE={available_cpus()} or fewer")
    if int(env.get("NODE_RANK", "0") or 0) == 0:  # the first node serves the rendezvous at ADDR:PORT
        port = _port(env)
        if not port_is_free(port):
            raise UsageError(f"PORT={port} is already in use on this machine (another training run?)",
                             hint=f"choose a free one, e.g. PORT={free_port()}")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


# -------------------------------------------------------------------------------------- the launch
def relaunch_if_requested(argv: list[str], check=None, debug: bool = False) -> int | None:
    """Run `xtune train argv` in NPROC_PER_NODE x NNODES processes; its exit code, or None for one
    process (or when already inside a launched process). `check(world_size)` runs first, once."""
    if under_launcher():
        return None
    args = torchrun_args(dict(os.environ))
    if args is None:
        return None
    check_launch(dict(os.environ))
    if check is not None:
        check(_count(dict(os.environ), "NPROC_PER_NODE") * _count(dict(os.environ), "NNODES"))
    return launch(args, ["-m", "xtune", "train", *argv, "--launcher", "pytorch"], debug=debug)


def launch(torchrun: list[str], command: list[str], *, debug: bool = False) -> int:
    """Start the processes with torch's elastic launcher; the first failure's error line and exit code."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, get_args_parser

    with _launch_environment(torchrun, debug) as errors:
        args = get_args_parser().parse_args([*torchrun, "--monitor_interval=0.2", *command])
        config, cmd, cmd_args = config_from_args(args)
        try:
            elastic_launch(config=config, entrypoint=cmd)(*cmd_args)
            return 0
        except ChildFailedError as exc:
            return _report(errors, exc.failures)
        except Exception as exc:  # the launcher itself stopped: a signal (SIGTERM, Ctrl-C), rendezvous
            if type(exc).__name__ != "SignalException":
                raise
            stopped = (f"stopped by {exc.sigval.name}", 128 + int(exc.sigval))
            return _report(errors, {}, default=stopped)


@contextlib.contextmanager
def _launch_environment(torchrun: list[str], debug: bool):
    """The processes' environment (rank error folder, threads per process) and a quiet launcher."""
    saved = dict(os.environ)
    # torch's elastic loggers each set their own level (LOGLEVEL): quiet every one of them
    quiet = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
             if name.startswith("torch.distributed.elastic")]
    levels = [logger.level for logger in quiet]
    nproc = int(next(a for a in torchrun if a.startswith("--nproc_per_node=")).split("=")[1])
    with tempfile.TemporaryDirectory(prefix="xtune-ranks-") as errors:
        try:
            for name in ("NPROC_PER_NODE", "NNODES"):
                os.environ.pop(name, None)
            os.environ[RANK_ERRORS] = errors
            if "OMP_NUM_THREADS" not in os.environ:  # torchrun would say 1; give each process its cores
                from xtune.hardware import available_cpus

                os.environ["OMP_NUM_THREADS"] = str(max(1, available_cpus() // nproc))
            os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])  # else mmengine warns
            if not debug:
                for logger in quiet:
                    logger.setLevel(logging.CRITICAL)
            yield Path(errors)
        finally:
            for logger, level in zip(quiet, levels, strict=True):
                logger.setLevel(level)
            os.environ.clear()
            os.environ.update(saved)


def _report(errors: Path, failures: dict, default: tuple[str, int] | None = None) -> int:
    """Print the first process error (by time) as the run's one `Error:` line; return its exit code."""
    recorded = {}
    for path in errors.glob("rank*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            record = json.loads(path.read_text())
            recorded[int(record["rank"])] = record
    # a process killed from outside (SIGKILL: out of memory ...) leaves no record; the others then fail
    # on the lost connection and do: the killed one is the cause
    for rank, failure in sorted(failures.items()):
        code = int(getattr(failure, "exitcode", 1) or 1)
        if rank not in recorded and code < 0 and -code != signal.SIGTERM:
            print(f"Error: process {rank} was killed by {failure.signal_name()} (out of memory?); the others "
                  "were stopped", file=sys.stderr)
            return 128 - code
    if recorded:
        first = min(recorded.values(), key=lambda r: r["time"])
        print(f"Error: process {first['rank']}: {first['message']}", file=sys.stderr)
        return int(first["exit_code"]) or 1
    for rank, failure in sorted(failures.items()):
        code = int(getattr(failure, "exitcode", 1) or 1)
        print(f"Error: process {rank} exited with {code} without an error of its own (see the lines above)",
              file=sys.stderr)
        return 128 - code if code < 0 else code
    message, code = default or ("the processes stopped", 1)
    print(f"Error: {message}", file=sys.stderr)
    return code


def record_rank_error(message: str, exit_code: int) -> bool:
    """Inside a launched process: record this process's error for the launcher (which prints the first
    one); False when no xtune launcher started this process (then the caller prints it)."""
    folder = os.environ.get(RANK_ERRORS)
    if not folder or not under_launcher():
        return False
    rank = os.environ.get("RANK", "0")
    record = {"rank": int(rank), "message": message, "exit_code": int(exit_code), "time": time.time()}
    try:
        Path(folder, f"rank{rank}.json").write_text(json.dumps(record))
    except OSError:
        return False
    return True


# ------------------------------------------------------------------------------------------- slurm
def slurm_to_torch_env() -> None:
    """Translate SLURM's variables to the RANK / LOCAL_RANK / WORLD_SIZE / MASTER_* that torch reads."""
    import subprocess

    env = os.environ
    env.setdefault("RANK", env["SLURM_PROCID"])
    env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
    env.setdefault("WORLD_SIZE", env["SLURM_NTASKS"])
    if "MASTER_ADDR" not in env:
        nodes = subprocess.run(["scontrol", "show", "hostnames", env["SLURM_NODELIST"]], capture_output=True,
                               text=True, check=True).stdout.split()
        env["MASTER_ADDR"] = nodes[0]
    env.setdefault("MASTER_PORT", env.get("PORT", "29500"))


def resolve_launcher(launcher: str) -> str:
    """'none' inside torchrun still means distributed (mmengine infers the same)."""
    if launcher == "slurm":
        slurm_to_torch_env()
        return "pytorch"
    if launcher == "none" and under_launcher() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "pytorch"
    return launcher
