"""Token ids to caption text, exactly as HF `batch_decode(..., skip_special_tokens=True)` does it."""
from __future__ import annotations

from tokenizers import Tokenizer


def _clean_up(text: str) -> str:
    """transformers' `clean_up_tokenization` (WordPiece tokenizers only)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


class TextDecoder:
    """Decodes generated ids with the artifact's tokenizer.json and the exporter's clean-up setting."""

    def __init__(self, tokenizer_json: str, clean_up_spaces: bool):
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.clean_up_spaces = clean_up_spaces

    def decode(self, ids: list[int]) -> str:
        """Decode one sequence, skipping special tokens."""
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return _clean_up(text) if self.clean_up_spaces else text
