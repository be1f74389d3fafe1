"""`xtune webui`: a Gradio page over the same code paths as the CLI (train, data checks, chat, export).

The page is a thin shell: training runs as an `xtune train` process (every CLI check, lock and `Error:` line
applies unchanged and is shown on the page), data checks and exports run the CLI commands themselves, and
the estimate and chat call the library functions the CLI calls. Gradio is imported only by `app` and the
tab modules, so the rest (paths, runs, i18n) is usable and testable without it.
"""
