"""Chat template rendering into trained / ignored segments, and export to jinja.

`render_segments` is what the data pipeline uses: the segments' text, concatenated, is exactly what the
model's official `chat_template` renders, and each segment says whether its tokens are trained.
"""

from xtune.templates.messages import ROLES
from xtune.templates.render import (
                                    Segment,
                                    get_template,
                                    render_prompt,
                                    render_segments,
                                    render_text,
                                    tokenizer_tokens,
)

__all__ = ["ROLES", "Segment", "get_template", "render_prompt", "render_segments", "render_text",
           "tokenizer_tokens"]
