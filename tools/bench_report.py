"""What every benchmark result carries (machine, versions, load, date) and how results are written.

The JSON file is the machine-readable result; `docs/benchmarks.md` holds one Markdown section per
subcommand between `<!-- bench:NAME -->` markers, so rerunning `train` rewrites the train tables and
leaves the hand-written text and the other sections alone. Only the standard library is imported
here: the `cli` benchmark and the tests use this module without torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
PACKAGES = ("torch", "transformers", "trl", "peft", "datasets", "tokenizers", "mmengine", "accelerate",
            "bitsandbytes", "flash-attn")


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide the figures (absent ones are left out)."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["xtune"] = _git_commit() or metadata.version("xtune")
    return out


def _git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return f"git {done.stdout.strip()}" if done.returncode == 0 and done.stdout.strip() else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_capability() -> str | None:
    """torch's CPU kernel level (AVX2, AVX512, ...), which decides how fast bf16 is here."""
    try:
        import torch

        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - information only
        return None


def machine(gpu: str | None = None) -> dict:
    """The machine in words and numbers; `loaded` is True when other work kept the cores busy."""
    cores = os.cpu_count() or 1
    load = load_average()
    info = {"cpu": cpu_model(), "cores": cores, "memory_gib": memory_gib(), "os": platform.platform(),
            "load_average": load, "loaded": bool(load and load[0] > 0.5 * cores),
            "cpu_capability": cpu_capability()}
    if gpu:
        info["gpu"] = gpu
    return info


def header(command: str, settings: dict, gpu: str | None = None) -> dict:
    """The common part of every JSON result."""
    return {"benchmark": command, "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(gpu),
            "versions": versions(), "settings": settings}


def write_json(result: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def fmt(value, digits: int = 3) -> str:
    """A table cell: numbers with `digits` significant figures, thousands separated; None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def context_lines(result: dict) -> list[str]:
    """The machine / versions / date / settings lines that head every Markdown section."""
    m, v = result["machine"], result["versions"]
    load = m.get("load_average")
    loaded = (f"; **loaded** by other work (load average {load[0]} on {m['cores']} cores): compare ratios, "
              "not absolute figures") if m.get("loaded") else (f"; load average {load[0]}" if load else "")
    lines = [f"- date: {result['date']}; command: `{result['command']}`",
             f"- machine: {m['cpu']} (torch CPU capability {m.get('cpu_capability')}), {m['cores']} cores, "
             f"{m.get('memory_gib')} GiB"
             + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU") + loaded,
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items())]
    if result.get("settings"):
        lines.append("- settings: " + ", ".join(f"{k}={_setting(val)}" for k,
                                                val in result["settings"].items()))
    return lines


def _setting(value) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the section `name` replaced by `body` (appended at the end when it is not there yet)."""
    begin, end = markers(name)
    block = f"{begin}\n{body.rstrip()}\n{end}"
    start = text.find(begin)
    if start >= 0:
        stop = text.find(end, start)
        if stop < 0:
            raise ValueError(f"{begin} has no matching {end}")
        return text[:start] + block + text[stop + len(end):]
    return text.rstrip() + "\n\n" + block + "\n"


def update_doc(name: str, body: str, path: str | Path = DOC) -> Path:
    """Rewrite the `name` section of docs/benchmarks.md (creating the file when needed)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(text, name, body), encoding="utf-8")
    return path
