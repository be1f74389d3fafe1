"""Evaluating a model on a test set: did the fine-tune help?

`testset` reads the records of any file xtune trains on into prompts and reference answers (the data
layer's dataset maps); `generate` answers them in batches, greedily, in the caller's prompt format;
`metrics` scores the answers (BLEU-4, ROUGE-1/2/L with jieba for Chinese, exact match); `run` ties them
together for one model and writes the table and the predictions file; `harness` runs
lm-evaluation-harness tasks. `xtune eval` and the training loop (`evaluation_data`) both use it.
"""
