"""Word-level tokenizer for the mini task: one token per whitespace-separated symbol.

The vocabulary is fixed (special tokens, round labels, numbers, punctuation), so every task format
shares it and a prompt or answer round-trips exactly through encode/decode. An unknown word maps to <unk>.
"""
from __future__ import annotations

from harness.mini.task import LABELS, NUMBERS, SYMBOLS

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
VOCAB: tuple[str, ...] = (PAD, EOS, UNK, *LABELS, *NUMBERS, *SYMBOLS)


def build_tokenizer():
    """A transformers fast tokenizer over VOCAB (no BOS; EOS ends every answer; PAD for batching)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   padding_side="left", model_max_length=512)

    return tok
