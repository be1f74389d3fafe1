"""The page's words in English and Chinese (the seed material is Chinese; LlamaBoard offers both).

Every label is a key here with both languages (a test checks that none lacks its Chinese). `--lang` picks
the language the page opens in; the switch on the page relabels every bound component in place.
"""

from __future__ import annotations

LANGS = ("en", "zh")

LABELS: dict[str, tuple[str, str]] = {
    "title": ("xtune: fine-tune from recipes", "xtune：用配置微调大模型"),
    "lang": ("Language", "语言"),
    "tab_train": ("Train", "训练"),
    "tab_data": ("Data", "数据"),
    "tab_chat": ("Chat", "对话"),
    "tab_export": ("Export", "导出"),
    # Train: what to train
    "model": ("Model (registered or a local folder)", "模型（已注册的模型或本地文件夹）"),
    "filter_method": ("Method", "方法"),
    "filter_objective": ("Objective", "训练目标"),
    "filter_dataset": ("Data set", "数据集"),
    "search": ("Search recipes", "搜索配置"),
    "recipe": ("Recipe", "配置"),
    "recipes_found": ("recipes match", "个配置符合条件"),
    "data": ("Data (the recipe's own, or a local file)", "数据（配置自带的，或本地文件）"),
    "data_format": ("Data format", "数据格式"),
    "detected": ("detected format", "检测到的格式"),
    "preview": ("Show samples", "查看样本"),
    "samples": ("First samples (trained text highlighted)", "前几条样本（高亮部分参与训练）"),
    # Train: settings
    "settings": ("Settings (prefilled from the recipe)", "训练参数（取自配置）"),
    "method": ("Tuning method", "微调方法"),
    "max_epochs": ("Epochs", "轮数"),
    "max_steps": ("Max steps (0: by epochs)", "最多步数（0：按轮数）"),
    "max_length": ("Max length", "最大长度"),
    "batch_size": ("Batch size per device", "每卡批大小"),
    "accumulative_counts": ("Gradient accumulation", "梯度累积"),
    "lr": ("Learning rate", "学习率"),
    "log_interval": ("Log every N steps", "每 N 步记录一次"),
    "lora_r": ("LoRA r", "LoRA 秩 r"),
    "lora_alpha": ("LoRA alpha", "LoRA alpha"),
    "lora_dropout": ("LoRA dropout", "LoRA dropout"),
    "lora_targets": ("LoRA targets", "LoRA 目标模块"),
    "quantization": ("Quantisation", "量化"),
    "deepspeed": ("DeepSpeed", "DeepSpeed"),
    "processes": ("Processes", "进程数"),
    "objective_settings": ("Objective settings", "训练目标参数"),
    "extra": ("More --cfg-options (KEY=VALUE ...)", "其他 --cfg-options（KEY=VALUE ...）"),
    "run_name": ("Run name (folder under work_dirs/)", "运行名称（work_dirs/ 下的文件夹）"),
    "estimate": ("Memory estimate (xtune estimate)", "显存估算（xtune estimate）"),
    "command": ("Equivalent command", "等价命令"),
    # Train: running
    "start": ("Start", "开始"),
    "stop": ("Stop (saves a checkpoint)", "停止（保存检查点）"),
    "resume": ("Resume", "继续训练"),
    "run": ("Run", "运行"),
    "status": ("Status", "状态"),
    "loss_plot": ("Loss", "损失"),
    "metrics_plot": ("Objective metrics", "训练目标指标"),
    "log": ("Log (last lines)", "日志（最后几行）"),
    "runs": ("Runs in the root", "根目录下的运行"),
    "step": ("step", "步"),
    "eta": ("time left", "剩余时间"),
    "state_running": ("running", "运行中"),
    "state_finished": ("finished", "已完成"),
    "state_stopped": ("stopped (checkpoint saved)", "已停止（已保存检查点）"),
    "state_failed": ("failed", "失败"),
    "state_saved": ("checkpoint saved", "已保存检查点"),
    "state_none": ("no run selected", "未选择运行"),
    "col_run": ("run", "运行"),
    "col_state": ("state", "状态"),
    "col_step": ("step", "步数"),
    "col_loss": ("loss", "损失"),
    "col_recipe": ("recipe", "配置"),
    # Data tab
    "check_file": ("Data file", "数据文件"),
    "check_template": ("Template (optional)", "对话模板（可选）"),
    "check": ("Check", "检查"),
    "check_result": ("Result", "结果"),
    "kept": ("kept", "有效"),
    "bad": ("bad", "有误"),
    "col_where": ("where", "位置"),
    "col_error": ("error", "错误"),
    # Chat tab
    "chat_model": ("Model (a folder: base or merged)", "模型（文件夹：基座或合并后的模型）"),
    "chat_adapter": ("Adapter (optional)", "Adapter（可选）"),
    "compare": ("Base and tuned side by side", "基座与微调后并排对比"),
    "bits": ("Load in", "加载精度"),
    "template": ("Chat template (empty: the model's own)", "对话模板（留空：模型自带）"),
    "system": ("System prompt", "系统提示词"),
    "max_new_tokens": ("Max new tokens", "最多生成 token 数"),
    "temperature": ("Temperature (0: greedy)", "温度（0：贪心解码）"),
    "top_p": ("Top-p", "Top-p"),
    "top_k": ("Top-k", "Top-k"),
    "repetition_penalty": ("Repetition penalty", "重复惩罚"),
    "seed": ("Seed (-1: none)", "随机种子（-1：不设）"),
    "image": ("Picture (vision-language models)", "图片（多模态模型）"),
    "sampling": ("Sampling and system prompt", "采样参数与系统提示词"),
    "load": ("Load", "加载"),
    "message": ("Message", "消息"),
    "send": ("Send", "发送"),
    "clear": ("Clear", "清空"),
    "base_answer": ("Base", "基座模型"),
    "tuned_answer": ("Tuned", "微调后"),
    "answer": ("Model", "模型"),
    "loaded": ("loaded", "已加载"),
    # Export tab
    "from_run": ("Fill in from a run", "从运行填入"),
    "pth_to_hf": ("Checkpoint to Hugging Face (pth_to_hf)", "检查点转 Hugging Face 格式（pth_to_hf）"),
    "export_recipe": ("Recipe (the run's copy)", "配置（运行时的副本）"),
    "export_options": ("The run's --cfg-options", "运行时的 --cfg-options"),
    "checkpoint": ("Checkpoint", "检查点"),
    "out": ("Output folder", "输出文件夹"),
    "force": ("Replace an existing output", "覆盖已有输出"),
    "convert": ("Convert", "转换"),
    "merge_title": ("Merge an adapter into its base", "把 adapter 合并进基座模型"),
    "base": ("Base model", "基座模型"),
    "adapter": ("Adapter", "Adapter"),
    "dtype": ("Precision", "精度"),
    "merge": ("Merge", "合并"),
    "gguf_title": ("GGUF for llama.cpp / Ollama", "导出 GGUF（llama.cpp / Ollama）"),
    "gguf_model": ("Model (or base, with an adapter)", "模型（或基座，配合 adapter）"),
    "gguf_out": ("Output file (.gguf)", "输出文件（.gguf）"),
    "outtype": ("Outtype", "权重类型"),
    "write_gguf": ("Write GGUF", "导出 GGUF"),
    "export_log": ("Output", "输出"),
}


def text(key: str, lang: str = "en") -> str:
    """The label for `key` in `lang` (en or zh); an unknown key is a bug and raises KeyError."""
    return LABELS[key][LANGS.index(lang) if lang in LANGS else 0]


class Labeller:
    """Hands out labels while the page is built and remembers which component shows which key, so that the
    language switch can relabel them all."""

    def __init__(self, lang: str = "en"):
        self.lang = lang if lang in LANGS else "en"
        self.bound: list[tuple[object, str, str]] = []

    def __call__(self, key: str) -> str:
        return text(key, self.lang)

    def bind(self, component, key: str, attr: str = "label"):
        self.bound.append((component, key, attr))
        return component

    def components(self) -> list:
        return [c for c, _, _ in self.bound]

    def updates(self, lang: str) -> list[dict]:
        """Gradio updates (the dicts `gr.update` makes) that relabel every bound component in `lang`."""
        return [{"__type__": "update", attr: text(key, lang)} for _, key, attr in self.bound]
