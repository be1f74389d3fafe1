# =====================================================================================================
# tinyllama_1_1b_chat_qlora_dolly_e3
# QLoRA (4-bit NF4 base) of TinyLlama-1.1B-Chat-v1.0 on dolly, 3 epochs.
#
#   xtune train tinyllama_1_1b_chat_qlora_dolly_e3 --deepspeed zero2
#   xtune train tinyllama_1_1b_chat_qlora_dolly_e3 --cfg-options lr=1e-4 max_length=1024 data_path=./my_data.jsonl
#
# Downloads the model TinyLlama/TinyLlama-1.1B-Chat-v1.0 and the data set databricks/databricks-dolly-15k (Hugging Face hub; a ModelScope id or a local path works as well).
# Shipped by the xtune-tinyllama plugin: to change it, `xtune copy-cfg tinyllama_1_1b_chat_qlora_dolly_e3 .` and edit the copy.
# =====================================================================================================

# ----------------------------------------------------------------------------------- PART 1  Settings
# Model
pretrained_model_name_or_path = 'TinyLlama/TinyLlama-1.1B-Chat-v1.0'
model_adapter = 'tinyllama'
trust_remote_code = False
method = 'qlora'

# Data
dataset_map = 'dolly'
data_path = 'databricks/databricks-dolly-15k'
prompt_template = 'tinyllama_chat'
max_length = 2048
pack_to_max_length = True

# Scheduler & optimizer
batch_size = 1  # per device
accumulative_counts = 16
dataloader_num_workers = 0
max_epochs = 3
max_steps = 0  # > 0: stop after this many optimizer steps instead
optim_type = 'AdamW'
lr = 2e-4
betas = (0.9, 0.999)
weight_decay = 0.0
max_norm = 1.0  # gradient clipping
warmup_ratio = 0.03

# Save
save_steps = 500
save_total_limit = 2  # checkpoints kept (-1: all)

# Evaluate generations during training
evaluation_freq = 500
SYSTEM = ''
evaluation_inputs = ['请给我介绍五个上海的景点', 'Please tell me five scenic spots in Shanghai']
seed = 0

# -------------------------------------------------------------------------- PART 2  Model & tokenizer
tokenizer = dict(pretrained_model_name_or_path=pretrained_model_name_or_path,
                 trust_remote_code=trust_remote_code, padding_side='right')
model = dict(
    pretrained_model_name_or_path=pretrained_model_name_or_path,
    adapter=model_adapter,
    trust_remote_code=trust_remote_code,
    torch_dtype='auto',  # bf16 where the hardware has it, else fp32
    attn_implementation='auto',  # flash_attention_2 on CUDA with flash-attn, else sdpa
    gradient_checkpointing=False,
    quantization=dict(load_in_4bit=True, bnb_4bit_quant_type='nf4', bnb_4bit_use_double_quant=True,
                      bnb_4bit_compute_dtype='auto'),
)
method_cfg = dict(
    type=method,
    r=64,
    lora_alpha=16,
    lora_dropout=0.1,
    target_modules='auto',  # the model adapter's choice ('all-linear' by default)
)

# ------------------------------------------------------------------------------------- PART 3  Data
train_dataset = dict(
    dataset_map=dataset_map,
    data_path=data_path,
    prompt_template=prompt_template,
    max_length=max_length,
    pack_to_max_length=pack_to_max_length,
    system=SYSTEM,
    train_on='all_turns',  # 'last_turn': train only the final assistant answer
    shuffle_before_pack=True,
    num_proc=1,
)
train_dataloader = dict(batch_size=batch_size, num_workers=dataloader_num_workers)

# ------------------------------------------------------------------------ PART 4  Optimizer & schedule
optim_wrapper = dict(
    optimizer=dict(type=optim_type, lr=lr, betas=betas, weight_decay=weight_decay),
    clip_grad=dict(max_norm=max_norm),
    accumulative_counts=accumulative_counts,
    dtype='auto',  # bf16 mixed precision where supported
)
param_scheduler = dict(type='cosine', warmup_ratio=warmup_ratio, eta_min=0.0)
train_cfg = dict(max_epochs=max_epochs, max_steps=max_steps)

# ---------------------------------------------------------------------------------- PART 5  Runtime
checkpoint = dict(interval=save_steps, max_keep_ckpts=save_total_limit)
evaluate_chat = dict(every=evaluation_freq, inputs=evaluation_inputs, system=SYSTEM, max_new_tokens=256)
log_interval = 10
randomness = dict(seed=seed, deterministic=False)
export_hf = True  # write WORK_DIR/hf (adapter or model + tokenizer with its chat template) at the end
