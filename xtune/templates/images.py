"""Images inside conversations: the `<image>` marker, and chat templates for processors.

xtune's conversations keep an image as the marker `<image>` in a message's text (LLaVA's and
LLaMA-Factory's convention), with the image files beside the messages. Training, chat and the sample
chats render the marker with the xtune template like any text and then put the model's own image prompt
in its place (`with_image_prompt`), so the three agree token for token. A processor saved with a model
carries the template's exported jinja behind a preamble (`vision_jinja`) that also accepts the content
lists transformers' processors pass (`[{"type": "image"}, {"type": "text", "text": ...}]`).
"""

from __future__ import annotations

import json

IMAGE_MARKER = "<image>"


def count_images(text: str) -> int:
    return text.count(IMAGE_MARKER)


def with_image_prompt(text: str, image_prompt: str) -> str:
    """`text` with every marker replaced by the model's image prompt (e.g. Qwen2-VL's vision tokens)."""
    return text if image_prompt in ("", IMAGE_MARKER) else text.replace(IMAGE_MARKER, image_prompt)


def lead_content(content: str, lead: str) -> str:
    """A template's `content_lead` before a message's text, unless the message opens with an image."""
    return content if not lead or content.startswith(IMAGE_MARKER) else lead + content


def as_content_parts(messages: list[dict]) -> list[dict]:
    """Messages with markers in their text -> transformers' content lists (image and text parts)."""
    out = []
    for message in messages:
        pieces = message["content"].split(IMAGE_MARKER)
        parts = [{"type": "text", "text": pieces[0]}] if pieces[0] or len(pieces) == 1 else []
        for piece in pieces[1:]:
            parts += [{"type": "image"}] + ([{"type": "text", "text": piece}] if piece else [])
        out.append({**message, "content": parts})
    return out


def vision_jinja(jinja: str, image_prompt: str) -> str:
    """`jinja` (an exported xtune template) behind a preamble that turns content lists into text: image
    parts become the model's image prompt, text parts their text; string contents pass through with their
    markers replaced. Everything else about the messages is kept."""
    prompt = json.dumps(image_prompt or IMAGE_MARKER, ensure_ascii=False)
    marker = json.dumps(IMAGE_MARKER)
    lines = [
        "{#- xtune: content lists (image / text parts) become text with the model's image prompt #}",
        "{%- set vision = namespace(messages=[]) %}",
        "{%- for message in messages %}",
        "    {%- if message.content is string %}{%- set text = message.content | replace(" + marker + ", "
        + prompt + ") %}",
        "    {%- else %}{%- set parts = namespace(text='') %}",
        "        {%- for part in message.content %}",
        "            {%- if part.type in ['image', 'image_url'] %}{%- set parts.text = parts.text + " + prompt
        + " %}",
        "            {%- elif part.type == 'text' %}{%- set parts.text = parts.text + part.text %}",
        "            {%- endif %}",
        "        {%- endfor %}{%- set text = parts.text %}",
        "    {%- endif %}",
        "    {%- set vision.messages = vision.messages + [dict(message, content=text)] %}",
        "{%- endfor %}",
        "{%- set messages = vision.messages %}",
    ]
    return "\n".join(lines) + "\n" + jinja

