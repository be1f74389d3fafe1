"""Built-in image data: the two layouts vision-language data comes in, and the public data sets of the
LLaVA recipes. Their pictures are downloaded separately (each set ships them as archives): the recipes'
`image_folder` says where relative image paths start."""

from xtune.registry import DatasetMap

_IMAGES = "xtune.data.images"

IMAGE_DATA = [
    DatasetMap(name="llava", convert=f"{_IMAGES}:llava",
               description="LLaVA JSON: image (path or list) + conversations [{from, value}] with <image>"),
    DatasetMap(name="mllm", convert=f"{_IMAGES}:mllm",
               description="LLaMA-Factory / OpenAI: messages [{role, content}] with <image>, images [paths]"),
    DatasetMap(name="llava_pretrain", format="llava", hub_id="liuhaotian/LLaVA-Pretrain",
               data_files="blip_laion_cc_sbu_558k.json", license="CC BY-NC 4.0 (images: their own)",
               description="LLaVA-Pretrain: 558k LAION/CC/SBU captions (stage 1; pictures in images.zip)"),
    DatasetMap(name="llava_instruct", format="llava", hub_id="liuhaotian/LLaVA-Instruct-150K",
               data_files="llava_v1_5_mix665k.json", license="CC BY 4.0 (images: COCO, GQA, OCR-VQA, ...)",
               description="LLaVA-1.5 instruction mix 665k (stage 2; pictures from COCO, GQA, OCR-VQA, "
                           "TextVQA, VisualGenome)"),
    DatasetMap(name="sharegpt4v", format="llava", hub_id="Lin-Chen/ShareGPT4V",
               data_files="sharegpt4v_instruct_gpt4-vision_cap100k.json", license="CC BY-NC 4.0",
               description="ShareGPT4V: 100k GPT-4V detailed captions (pictures from COCO, SAM, ...)"),
    DatasetMap(name="mllm_demo", format="mllm", license="Apache-2.0",
               description="LLaMA-Factory's mllm_demo.json (data/ of its repository) with mllm_demo_data/"),
]
