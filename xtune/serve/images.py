"""Images in chat requests: OpenAI's `image_url` content parts, for vision-language models.

Each image part becomes the `<image>` marker in the message's text, as in xtune's training data (and
`xtune chat --image`), and its decoded picture goes with the request; the chat session then renders the
markers as the model's image prompt and the processor reads the pictures. Only `data:` URLs
(`data:image/png;base64,...`) are read: the server fetches nothing from the network or the disk on a
client's behalf.
"""

from __future__ import annotations

import base64
import binascii
import io

from xtune.serve.errors import bad


def content_parts(parts: list, where: str) -> tuple[str, list]:
    """A content list as text with an `<image>` marker per image part, and the decoded pictures."""
    from xtune.templates.images import IMAGE_MARKER

    text, pictures = "", []
    for j, part in enumerate(parts):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            if IMAGE_MARKER in part["text"]:
                raise bad(f"{at}.text holds {IMAGE_MARKER!r}: send images as image_url parts", param=at)
            text += part["text"]
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            pictures.append(decode_image(url, at))
            text += IMAGE_MARKER
        else:
            raise bad(f"{at} must be {{type: text, text}} or {{type: image_url, image_url: {{url}}}}, got "
                      f"{str(part)[:80]}", param=at)
    return text, pictures


def decode_image(url, where: str):
    """The picture of a `data:image/...;base64,...` URL, as RGB (PIL), or a 400 naming the part."""
    from PIL import Image, UnidentifiedImageError

    from xtune.data.image_checks import too_big

    if not isinstance(url, str) or not url.startswith("data:"):
        shown = url[:40] if isinstance(url, str) else type(url).__name__
        raise bad(f"{where}: only data: URLs are read (data:image/png;base64,...), got {shown!r}: the server "
                  "fetches no files or web addresses", param=where)
    head, _, data = url.partition(",")
    if not head.endswith(";base64"):
        raise bad(f"{where}: the data URL must be base64 (data:image/...;base64,...)", param=where)
    try:
        raw = base64.b64decode(data, validate=True)
        with Image.open(io.BytesIO(raw)) as img:
            problem = too_big(img.size)
            if problem:
                raise bad(f"{where}: the image {problem}", param=where)
            return img.convert("RGB")
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise bad(f"{where}: the image cannot be read ({type(exc).__name__}: {exc})", param=where) from None
