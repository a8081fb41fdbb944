"""CPU-scale reproduction: a synthetic "pick by rule" task, a word-level tokenizer and an SFT warm start.

See docs/mini.md. `task` generates problems and scores completions, `tokenizer` builds the vocabulary,
`warmstart` trains the tiny Qwen3 base model that every mini cell starts from.
"""
