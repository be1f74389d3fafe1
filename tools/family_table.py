#!/usr/bin/env python3
"""The family x step table of docs/recipes.md ("Every family, proven"), measured by running the matrix.

tests/test_family_matrix.py takes every model family of the registry through train -> pth_to_hf -> merge ->
chat -> hf_to_gguf on a tiny random model of its architecture and, when $XTUNE_FAMILY_RESULTS names a file,
writes each step's outcome there. This tool runs that module (or reads such a file) and prints Markdown:
one row per family (or per architecture of a family), one column per step, a note per refusal.

    python tools/family_table.py                       # run the matrix (about a minute), print the table
    python tools/family_table.py --write-docs          # ... and put it in docs/recipes.md
    python tools/family_table.py --results FILE.json   # render a results file written earlier

Exit status 1 when a step FAILED (the table still shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STEPS = ("train", "pth_to_hf", "merge", "chat", "gguf")
DOCS = REPO / "docs" / "recipes.md"
SECTION = "## Every family, proven"
MARK_START, MARK_END = "<!-- family-table:start -->", "<!-- family-table:end -->"


def run_matrix(results: Path) -> tuple[int, float]:
    """Run tests/test_family_matrix.py with its results going to `results`: (pytest's status, seconds)."""
    env = dict(os.environ, XTUNE_FAMILY_RESULTS=str(results))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "tests/test_family_matrix.py", "-q", "-p",
                           "no:cacheprovider"], cwd=REPO, env=env, stdout=sys.stderr)
    return done.returncode, time.perf_counter() - start


class Notes:
    """Numbered footnotes, one per distinct text."""

    def __init__(self):
        self.texts: list[str] = []

    def ref(self, text: str) -> str:
        text = " ".join(text.split()).split(" (supported: ")[0]  # the hint lists every supported kind
        if len(text) > 200 and ". " in text[40:]:  # a library's message: its first sentence
            text = text[:text.index(". ", 40) + 1]
        if len(text) > 300:
            text = text[:297].rstrip() + "..."
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


def cell(outcome: str | None, notes: Notes) -> str:
    """A short table cell for a recorded outcome; the reason goes to a note."""
    if outcome is None:
        return "-"
    if outcome == "pass":
        return "pass"
    kind, _, why = outcome.partition(": ")
    if outcome.startswith("pass with "):
        options, _, refusal = outcome.removeprefix("pass with ").partition("; as generated, refused: ")
        return f"pass with `{options}` {notes.ref('as generated, refused: ' + refusal)}"
    if outcome.startswith("not reached"):
        return "not reached"
    if outcome.startswith("see "):
        return f"see {notes.ref(outcome.removeprefix('see '))}"
    if kind == "refused":
        return f"refused {notes.ref(why)}"
    if kind == "skipped":
        return f"skipped {notes.ref(why)}"
    if kind == "component":
        return f"component {notes.ref(why)}"
    return f"**FAILED** {notes.ref(outcome.removeprefix('FAILED: '))}"


def render(results: dict, seconds: float | None = None) -> str:
    notes = Notes()
    head = ["row", "mirrors (shrunk config.json)", "recipe", *STEPS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    total = 0.0
    for row_id, row in results.items():
        total += sum(row.get("seconds", {}).values())
        cells = [cell(row["steps"].get(step), notes) for step in STEPS]
        label = row_id if row_id == row["family"] else f"{row_id} ({row['family']})"
        if row.get("note") and row["note"] not in ("vision-language", "vision encoder"):
            label += f" {notes.ref(row['note'])}"
        hub = f"`{row['hub_id']}`" if row.get("hub_id") else row.get("note", "")
        recipe = f"`{row['recipe']}`" if row.get("recipe") else ""
        lines.append("| " + " | ".join([label, hub, recipe, *cells]) + " |")
    out = "\n".join(lines) + "\n\n" + "\n".join(f"{i}. {t}" for i, t in enumerate(notes.texts, 1)) + "\n"
    if seconds is not None:
        from importlib.metadata import version

        libs = ", ".join(f"{name} {version(name)}" for name in ("torch", "transformers", "peft"))
        out += (f"\nMeasured with {libs} on {os.cpu_count()} CPU cores: the module took {seconds:.0f} s "
                f"({total:.0f} s in the steps above; the rest is imports and building the tiny models).\n")
    return out


def write_docs(table: str) -> None:
    """Replace the table between the markers of the section (the section itself is written by hand)."""
    text = DOCS.read_text(encoding="utf-8")
    if SECTION not in text or MARK_START not in text:
        raise SystemExit(f"{DOCS}: no '{SECTION}' section with {MARK_START} ... {MARK_END}")
    head, _, rest = text.partition(MARK_START)
    _, _, tail = rest.partition(MARK_END)
    DOCS.write_text(f"{head}{MARK_START}\n{table}{MARK_END}{tail}", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="render this results file instead of running the matrix")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"put the table in {DOCS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    status, seconds = 0, None
    if args.results:
        results = json.loads(args.results.read_text(encoding="utf-8"))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "results.json"
            status, seconds = run_matrix(path)
            if not path.is_file():
                print("the matrix wrote no results", file=sys.stderr)
                return 1
            results = json.loads(path.read_text(encoding="utf-8"))
    table = render(results, seconds)
    print(table)
    if args.write_docs:
        write_docs(table)
    failed = any(str(v).startswith("FAILED") for row in results.values() for v in row["steps"].values())
    return 1 if failed or status not in (0, 5) else 0


if __name__ == "__main__":
    raise SystemExit(main())
