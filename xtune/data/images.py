"""Image records: LLaVA's and LLaMA-Factory's layouts -> conversations whose messages carry their images.

An image stays where the text has its `<image>` marker; the message that holds the marker lists the
image file under "images", in marker order. Images are local files only, given by path (relative paths
are resolved against the recipe's `image_folder`, by default the data file's folder). Every record is
checked before anything is tokenized: a missing image, one that does not decode in full or is too big
(`xtune.data.image_checks`), or a number of markers that differs from the images given, is reported with
the record, the field and the image, and nothing trains. Records whose pictures would be lost (a text
model, a text dataset map: `unread_pictures`) are refused unless `ignore_images=True`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xtune.data.conversation import RecordError
from xtune.data.formats import openai, sharegpt
from xtune.errors import DataError
from xtune.templates.images import IMAGE_MARKER, count_images

IMAGES = "images"  # a message's images, in the order of its markers
IMAGE_FIELD = "image_field"  # the record field that gave a message its images (for messages about them)
PICTURE_FIELDS = ("images", "image")  # where records of LLaVA's and LLaMA-Factory's layouts list pictures
_URL_PREFIXES = ("http://", "https://", "ftp://", "data:")


def llava(record: dict, *, messages: str | None = "conversations", image: str | None = "image",
          **options: Any) -> list[dict]:
    """LLaVA JSON: `image` (a path, or a list of paths) and sharegpt `conversations` with `<image>`."""
    out = sharegpt(record, messages=messages, system=None, tools=None, **options)
    return attach_images(out, image_list(record, image), image or "image")


def mllm(record: dict, *, messages: str | None = "messages", images: str | None = "images",
         **_: Any) -> list[dict]:
    """LLaMA-Factory / OpenAI layout: `messages` [{role, content}] and `images` [paths]; a content list may
    also hold the images itself as parts ({"type": "image", "image": PATH} or an "image_url" part)."""
    field = messages or "messages"
    turns, inline = _inline_images(record.get(field), field)
    listed = image_list(record, images)
    if inline and listed:
        raise RecordError("gives images both inside the messages and in the image list; use one of them",
                          images)
    out = openai({**record, field: turns}, messages=field)
    return attach_images(out, inline or listed, field if inline else images or "images")


def image_list(record: dict, column: str | None) -> list[str]:
    """The record's image paths (a string or a list of strings), checked to be local paths."""
    value = None if column is None else record.get(column)
    if value in (None, "", []):
        return []
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RecordError("must be an image path or a list of image paths", column)
    for v in value:
        _local_only(v, column)
    return list(value)


def _local_only(path: str, field: str | None) -> None:
    if path.strip().lower().startswith(_URL_PREFIXES):
        raise RecordError(f"image {path!r} is a URL: xtune reads local image files only (download it and "
                          "give its path)", field)


def _inline_images(turns: Any, field: str) -> tuple[Any, list[str]]:
    """OpenAI content parts of type image -> `<image>` markers, and the paths they name."""
    if not isinstance(turns, list):
        return turns, []
    found: list[str] = []
    out = []
    for i, msg in enumerate(turns):
        content = msg.get("content") if isinstance(msg, dict) else None
        if not isinstance(content, list):
            out.append(msg)
            continue
        parts = []
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in ("image", "image_url"):
                parts.append(part)
                continue
            source = part.get("image") or part.get("path") or (part.get("image_url") or {}).get("url")
            where = f"{field}[{i}].content[{j}]"
            if not isinstance(source, str) or not source.strip():
                raise RecordError("an image part must name its file ('image': PATH)", where)
            _local_only(source, where)
            found.append(source)
            parts.append({"type": "text", "text": IMAGE_MARKER})
        out.append({**msg, "content": parts})
    return out, found


def attach_images(messages: list[dict], images: list[str], field: str) -> list[dict]:
    """Give each message the images of its markers; the counts must agree and only users show images."""
    counts = [count_images(m["content"]) for m in messages]
    if sum(counts) != len(images):
        raise RecordError(f"the messages have {sum(counts)} {IMAGE_MARKER} marker(s) but {len(images)} "
                          f"image(s) are given", field)
    position = 0
    for i, (message, n) in enumerate(zip(messages, counts, strict=True)):
        if n and message["role"] != "user":
            raise RecordError(f"message {i} ({message['role']}) holds an {IMAGE_MARKER} marker: only user "
                              "messages can show images", field)
        if n:
            message[IMAGES] = images[position:position + n]
            message[IMAGE_FIELD] = field
            position += n
    return messages


llava.reads_images = mllm.reads_images = True  # the dataset maps that read pictures (see unread_pictures)


def unread_pictures(record, converted, convert, *, vision: bool) -> str | None:
    """The field of `record` whose pictures would be lost: one a text dataset map does not read (a
    `images` list under `openai`), or, for a text model (`vision=False`), any that gave the messages
    pictures. None when the record shows no pictures, or they reach a vision-language model."""
    if not vision and isinstance(converted, list):
        for m in converted:
            if isinstance(m, dict) and m.get(IMAGES):
                return m.get(IMAGE_FIELD, IMAGES)
    if getattr(convert, "reads_images", False) or not isinstance(record, dict):
        return None
    return next((f for f in PICTURE_FIELDS if isinstance(record.get(f), (str, list)) and record[f]), None)


def without_pictures(converted):
    """A converted record with its pictures and their `<image>` markers left out (`ignore_images=True`)."""
    if not isinstance(converted, list):
        return converted
    return [{k: v.replace(IMAGE_MARKER, "") if k == "content" and isinstance(v, str) else v
             for k, v in m.items() if k not in (IMAGES, IMAGE_FIELD)} if isinstance(m, dict) else m
            for m in converted]


def image_folder(cfg: dict) -> Path | None:
    """Where relative image paths start: the recipe's `image_folder`, else a local data file's folder."""
    folder = cfg.get("image_folder")
    if folder:
        return Path(folder).expanduser()
    data_path = cfg.get("data_path")
    if data_path and Path(data_path).expanduser().exists():
        path = Path(data_path).expanduser()
        return path if path.is_dir() else path.parent
    return None


def resolve_images(conversations: list, wheres: list[str], folder: Path | None, *, checks=None,
                   accepts=None) -> tuple[list[list[str]], list[int], list[str]]:
    """(absolute image paths per good conversation, indices of those, problems). Every picture is decoded
    (once: `checks`, a PictureChecks, remembers verdicts) and its size offered to `accepts(size)` (the
    processor's verdict on it, a problem or None); a problem names the record, the field and the picture."""
    from xtune.data.image_checks import PictureChecks

    checks = checks or PictureChecks(store=False)
    named = [[(n, m.get(IMAGE_FIELD, IMAGES), _under(n, folder)) for m in messages for n in m.get(IMAGES, ())]
             for messages in conversations]
    verdicts = iter(checks.check([path for pictures in named for _, _, path in pictures]))
    paths_per, kept, problems = [], [], []
    for index, (pictures, where) in enumerate(zip(named, wheres, strict=True)):
        bad = []
        for (name, field, _), verdict in zip(pictures, verdicts, strict=False):  # the next ones
            problem = verdict.problem or (accepts(verdict.size) if accepts else None)
            if problem:
                bad.append(f"{where}: field {field!r}: image {name!r}: {problem}")
        problems += bad
        if not bad:
            paths_per.append([str(path.resolve()) for _, _, path in pictures])
            kept.append(index)
    return paths_per, kept, problems


def _under(name: str, folder: Path | None) -> Path:
    path = Path(name).expanduser()
    return folder / path if not path.is_absolute() and folder is not None else path


def check_image(path: Path) -> str | None:
    """What is wrong with an image file (None: it opens and decodes, and Pillow's pixel limit holds)."""
    from xtune.data.image_checks import picture_verdict

    return picture_verdict(path).problem


def load_image(path: str | Path):
    """The picture as RGB; a file that stopped being readable is one DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"image {str(path)!r} cannot be read: {type(exc).__name__}: {exc}") from None
