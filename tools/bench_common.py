"""What the benchmark modules share: where the shared/ material lies, the workers' offline environment,
and running one arm in a process of its own (`bench.py _worker SPEC`).

The ground floor of tools/bench*.py: it imports none of them, so bench_train, bench_data and bench_gpu can
all use it without importing each other in a circle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent


def shared_dir() -> Path:
    """The shared/ folder (XTUNE_SHARED_DIR, default ../shared beside the checkout)."""
    return Path(os.environ.get("XTUNE_SHARED_DIR", REPO.parent / "shared")).resolve()


def tiny_model() -> Path:
    """The tiny random Llama-2 of shared/ in HF format."""
    return shared_dir() / "reference" / "models" / "llama2_tiny_random" / "hf_converted_DERIVED"


def offline_env(extra: dict | None = None) -> dict:
    """The environment of every worker: no hub access (everything else as the user has it)."""
    env = dict(os.environ)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[var] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(TOOLS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra or {})
    return env


def run_arm(spec: dict, out_dir: Path, timeout: float | None = None) -> dict:
    """One arm in its own process (`bench.py _worker`); its result JSON plus the process's wall time."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = out_dir / "spec.json", out_dir / "result.json"
    spec = dict(spec, result=str(result_path), work_dir=str(out_dir / "work"))
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    log = out_dir / "log.txt"
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        proc = subprocess.run([sys.executable, str(TOOLS / "bench.py"), "_worker", str(spec_path)], stdout=fh,
                              stderr=subprocess.STDOUT, env=offline_env(spec.get("env")), timeout=timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not result_path.is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"arm {spec['arm']} failed (exit {proc.returncode}); log {log}:\n{tail}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result["wall_s"] = wall
    return result
