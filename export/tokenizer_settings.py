"""Tokenizer decode settings that tokenizer.json alone does not carry."""

from __future__ import annotations


def clean_up_spaces(tokenizer) -> bool:
    """Whether HF's decode applies `clean_up_tokenization` (it skips it for BPE models unless forced)."""
    if not getattr(tokenizer, "clean_up_tokenization_spaces", False):
        return False
    forced = getattr(tokenizer, "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False)
    is_bpe = type(tokenizer.backend_tokenizer.model).__name__ == "BPE"
    return forced or not is_bpe
