"""`xtune serve`: an OpenAI-compatible HTTP API over a model, a model + adapter, or a 4/8-bit model.

- `schema`: the requests, read and checked field by field (every mistake is a 400 with an OpenAI-style
  error body that names the field);
- `worker`: the generation thread, which batches queued requests with the same sampling settings into one
  left-padded `generate` and streams each row's text back to its request;
- `app`: the FastAPI application (routes, API key, server-sent events);
- `vllm_backend`: the same worker interface over vLLM, where it is installed.

Prompts are rendered by `xtune.chat.session.ChatSession`, the code `xtune chat` uses, so the server
talks to a model in the format it was trained with and stops at the same stop words.
"""
