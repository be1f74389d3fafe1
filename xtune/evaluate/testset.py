"""A test set: the records of any file xtune trains on, each split into a prompt and its reference answer.

Records are read by the data layer exactly as for training (the dataset map's converter, the recipe's
system prompt and self-cognition names, every bad record reported together with file, line and field).
The reference is a record's last assistant answer; the prompt is the conversation before it, which the
model answers next. A test record needs an answer to compare with: one whose last answer is empty is a
bad record like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

from xtune.errors import DataError, UsageError

# What a record's fields say about its layout, for files given without --dataset-map.
_LAYOUTS = (("conversations", "sharegpt"), ("messages", "openai"), ("instruction", "alpaca"))


@dataclass(frozen=True)
class TestRecord:
    __test__ = False  # not a pytest test class, whatever its name
    messages: list[dict]  # the conversation up to the answer: [{"role", "content"}], ending on a user turn
    reference: str
    where: str  # file and line (or record index), for the predictions file and error messages

    @property
    def question(self) -> str:
        return self.messages[-1]["content"]


def guess_dataset_map(data_path: str) -> str:
    """The dataset map of a file given without one, from its first record's fields: `conversations` is
    sharegpt, `messages` openai, `instruction` alpaca."""
    from xtune.data.sources import load_source

    source = load_source(data_path)
    first = next(iter(source), (None, None))[1]
    keys = set(first) if isinstance(first, dict) else set()
    for key, name in _LAYOUTS:
        if key in keys:
            return name
    raise UsageError(f"cannot tell the format of {data_path!r} from its first record (fields: "
                     f"{', '.join(sorted(keys)) or 'none'})",
                     hint="pass --dataset-map alpaca | sharegpt | openai | self_cognition | ...")


def _test_record(messages, *, system: str, train_on: str, map_name: str) -> tuple[list[dict], str]:
    """(prompt messages, reference) of one converted record (the data layer's checks first)."""
    from xtune.data.conversation import RecordError
    from xtune.data.records import checked_conversation

    if messages and messages[0]["role"] == "text":
        raise RecordError(f"dataset map {map_name!r} holds plain text, with no answer to compare with")
    messages = checked_conversation(messages, system=system, train_on=train_on, map_name=map_name)
    reference = messages[-1]["content"]
    if not reference.strip():
        raise RecordError("has no reference answer (its last assistant message is empty)", "output")
    return [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], reference


def load_test_set(data_path: str, *, registry, dataset_map: str | None = None, system: str = "",
                  limit: int | None = None, columns: dict | None = None,
                  self_cognition: tuple[str | None, str | None] = (None, None)) -> list[TestRecord]:
    """The first `limit` (default: every) records of `data_path` as prompts with reference answers."""
    from xtune.data.records import load_records, map_data

    name = dataset_map or guess_dataset_map(data_path)
    if name not in registry.dataset_maps:
        from xtune.errors import did_you_mean

        raise UsageError(f"unknown dataset map {name!r}",
                         hint=did_you_mean(name, registry.dataset_maps.names()) or "see `xtune plugins`")
    kind = map_data(name, registry)
    if kind != "sft":
        raise UsageError(f"dataset map {name!r} holds {kind} records, not questions with one answer",
                         hint="evaluate on instruction or chat data (alpaca, sharegpt, openai ...)")
    cfg = {"dataset_map": name, "data_path": data_path, "system": system, "columns": columns or {},
           "self_cognition_name": self_cognition[0], "self_cognition_author": self_cognition[1]}
    items, wheres, _ = load_records(cfg, _test_record, registry=registry, progress=False)
    records = [TestRecord(prompt, reference, where)
               for (prompt, reference), where in zip(items, wheres, strict=True)]
    if not records:
        raise DataError(f"{data_path}: no test records")
    return records[:limit] if limit else records
