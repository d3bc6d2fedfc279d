"""Token ids to caption text, exactly as HF decodes them: `batch_decode(..., skip_special_tokens=True)`, or, for a
family that keeps special tokens (Florence-2), the decoded text with given literal strings removed and stripped."""

from __future__ import annotations

from tokenizers import Tokenizer


def _clean_up(text: str) -> str:
    """transformers' `clean_up_tokenization` (WordPiece tokenizers only)."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


class TextDecoder:
    """Decodes generated ids with the artifact's tokenizer.json and the exporter's clean-up setting."""

    def __init__(self, tokenizer_json: str, settings: dict):
        """`settings`: the manifest's "tokenizer" block (clean_up_tokenization_spaces, and optionally
        skip_special_tokens (default true), remove (literal strings to delete) and strip)."""
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.clean_up_spaces = bool(settings.get("clean_up_tokenization_spaces"))
        self.skip_special = bool(settings.get("skip_special_tokens", True))
        self.remove = tuple(settings.get("remove", ()))
        self.strip = bool(settings.get("strip", False))

    def decode(self, ids: list[int]) -> str:
        """Decode one sequence (the generated ids up to and including EOS)."""
        text = self.tokenizer.decode(ids, skip_special_tokens=self.skip_special)
        if self.clean_up_spaces:
            text = _clean_up(text)
        for literal in self.remove:
            text = text.replace(literal, "")
        return text.strip() if self.strip else text
