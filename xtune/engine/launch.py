"""Starting several processes the way XTuner users expect: `NPROC_PER_NODE=N xtune train ...`
(plus NNODES, NODE_RANK, ADDR, PORT for several machines) re-runs the same command under torchrun;
`--launcher slurm` reads SLURM's variables; torchrun and the deepspeed launcher work directly."""

from __future__ import annotations

import os
import subprocess
import sys

from xtune.errors import UsageError


def under_launcher() -> bool:
    """True inside a process started by torchrun / the deepspeed launcher / slurm (srun)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def _count(env: dict[str, str], name: str) -> int:
    value = env.get(name, "1") or "1"
    if not value.strip().isdigit() or int(value) < 1:
        raise UsageError(f"{name}={value!r} is not a number of {'processes' if 'PROC' in name else 'nodes'}",
                         hint=f"set {name} to a positive whole number, e.g. {name}=2")
    return int(value)


def torchrun_command(argv: list[str], env: dict[str, str]) -> list[str] | None:
    """The torchrun command line for NPROC_PER_NODE / NNODES, or None for a single process."""
    nproc, nnodes = _count(env, "NPROC_PER_NODE"), _count(env, "NNODES")
    if nproc <= 1 and nnodes <= 1:
        return None
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--nnodes={nnodes}",
           f"--node_rank={env.get('NODE_RANK', '0')}", f"--master_addr={env.get('ADDR', '127.0.0.1')}",
           f"--master_port={env.get('PORT', '29500')}", "-m", "xtune", "train", *argv]
    if "--launcher" not in argv:
        cmd += ["--launcher", "pytorch"]
    return cmd


def relaunch_if_requested(argv: list[str]) -> int | None:
    """Run the command under torchrun when NPROC_PER_NODE/NNODES ask for it; its exit code, else None."""
    if under_launcher():
        return None
    cmd = torchrun_command(argv, dict(os.environ))
    if cmd is None:
        return None
    env = {k: v for k, v in os.environ.items() if k not in ("NPROC_PER_NODE", "NNODES")}
    return subprocess.call(cmd, env=env)


def slurm_to_torch_env() -> None:
    """Translate SLURM's variables to the RANK / LOCAL_RANK / WORLD_SIZE / MASTER_* that torch reads."""
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
