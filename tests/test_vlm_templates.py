"""The chat templates of vision-language models against their processors' official jinja.

Those templates read content lists (`[{"type": "image"}, {"type": "text", "text": ...}]`); xtune keeps an
image as the `<image>` marker in a message's text. Every conversation of tests/test_templates.py, plus
some with images, is rendered three ways and must agree byte for byte: by xtune (markers in text), by the
official jinja (markers turned into content lists), and by the jinja xtune saves with a processor
(`vision_jinja` over the exported template, given the content lists). The official templates are quoted
from the models' processor configs on the hub (chat_template.json / tokenizer_config.json).
"""

from __future__ import annotations

import pytest
from test_templates import CASES, _jinja, _ours

from xtune.plugins import get_registry
from xtune.templates.export import export_jinja, find_template_name
from xtune.templates.images import IMAGE_MARKER, as_content_parts, vision_jinja

OFFICIAL = {
    "hub:Qwen/Qwen2-VL-7B-Instruct": (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for"
        " message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>syst"
        "em\nYou are a helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% "
        "if message['content'] is string %}{{ message['content'] }}<|im_end|>\n{% else %}{% for cont"
        "ent in message['content'] %}{% if content['type'] == 'image' or 'image' in content or 'ima"
        "ge_url' in content %}{% set image_count.value = image_count.value + 1 %}{% if add_vision_i"
        "d %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|"
        ">{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = vid"
        "eo_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vis"
        "ion_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ content['text'] }}{% "
        "endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_s"
        "tart|>assistant\n{% endif %}"),
    "hub:OpenGVLab/InternVL3-1B-hf": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['cont"
        "ent'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %"
        "}{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}{% elif content['type'] == 'vide"
        "o' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{"
        "% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_s"
        "tart|>assistant\n' }}{% endif %}"),
    "hub:HuggingFaceM4/Idefics3-8B-Llama3": (
        "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}{% if messag"
        "e['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in me"
        "ssage['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == "
        "'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_g"
        "eneration_prompt %}{{ 'Assistant:' }}{% endif %}"),
}
IMAGE_PROMPTS = {"qwen2_vl_chat": "<|vision_start|><|image_pad|><|vision_end|>",
                 "internvl_chat": "<IMG_CONTEXT>\n", "idefics3": IMAGE_MARKER}
IMAGE_CASES = [
    [{"role": "user", "content": "<image>Who are they?"}, {"role": "assistant", "content": "Kane."},
     {"role": "user", "content": "What are they doing?<image>"}],
    [{"role": "system", "content": "Look closely."}, {"role": "user", "content": "<image><image>Compare."},
     {"role": "assistant", "content": "The left one is red."}],
    [{"role": "user", "content": "<image>\nDescribe the picture."}],
]


def _markers_as_prompt(text, name):
    return None if text is None else text.replace(IMAGE_MARKER, IMAGE_PROMPTS[name])


@pytest.mark.parametrize("name", sorted(IMAGE_PROMPTS))
def test_vlm_template_matches_processor_template(name):
    registry = get_registry()
    template = registry.chat_templates.get(name)
    official = OFFICIAL[template.reference]
    saved = vision_jinja(export_jinja(template, registry=registry), IMAGE_PROMPTS[name])
    compared = 0
    for messages, gen in CASES + [(m, g) for m in IMAGE_CASES for g in (False, True)]:
        ours = _markers_as_prompt(_ours(template, messages, gen), name)
        expected = _jinja(official, as_content_parts(messages), gen, template)
        assert ours == expected, (messages, gen)
        assert _jinja(saved, as_content_parts(messages), gen, template) == expected, (messages, gen)
        assert _jinja(saved, messages, gen, template) == expected, (messages, gen)
        compared += ours is not None
    assert compared >= 60
    assert find_template_name(saved, registry=registry, image_prompt=IMAGE_PROMPTS[name]) == name
    assert find_template_name(saved, registry=registry) is None
