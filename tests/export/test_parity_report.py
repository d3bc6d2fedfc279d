"""The parity gate tells a near-tie (reported) from a real mismatch (refused), and says what it compared."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from export import parity
from export.families import vit_gpt2

SETTINGS = {"max_new_tokens": 4, "length_penalty": 1.0, "early_stopping": False, "eos_token_id": 9}


class FakeHF:
    def __init__(self, rows):
        self.rows = rows

    def generate(self, pixel_values, **kwargs):
        rows = [[0] + r for r in self.rows[: pixel_values.shape[0]]]
        width = max(map(len, rows))
        seqs = torch.tensor([r + [9] * (width - len(r)) for r in rows])
        return SimpleNamespace(sequences=seqs, scores=[torch.full((len(seqs), 10), 1.0)])


class FakeRuntime:
    def __init__(self, rows, gap):
        self.rows, self.gap = rows, gap
        self.text = SimpleNamespace(decode=lambda ids: " ".join(map(str, ids)))

    def generate_ids(self, pixels, num_beams, trace):
        n = pixels.shape[0]
        trace.gaps = [[5.0, self.gap, 5.0, 5.0] for _ in range(n)]
        trace.top = [[[(1, 1.0), (2, 1.0 - g)] for g in gaps] for gaps in trace.gaps]
        return self.rows[:n]


TOKENIZER = SimpleNamespace(batch_decode=lambda rows, skip_special_tokens: [" ".join(map(str, r)) for r in rows])


def _check(hf_rows, our_rows, gap):
    loaded = SimpleNamespace(model=FakeHF(hf_rows), tokenizer=TOKENIZER, family=vit_gpt2.FAMILY)
    return parity.check(loaded, FakeRuntime(our_rows, gap), torch.zeros(2, 3, 4, 4), SETTINGS, "float32", (1, 2), (1,))


def test_identical_tokens_pass_with_a_summary():
    report = _check([[1, 2, 9], [3, 9]], [[1, 2, 9], [3, 9]], gap=1.0)
    assert report.identical == report.sequences == 3
    assert "3/3 sequences token-identical over 2 cases (greedy@batch1, greedy@batch2)" in report.summary()


def test_parting_at_a_near_tie_is_reported_not_refused():
    report = _check([[1, 2, 9], [3, 9]], [[1, 4, 9], [3, 9]], gap=1e-5)
    assert report.identical == 1 and len(report.near_ties) == 2
    assert "parted at step 1" in report.near_ties[0]


def test_parting_without_a_near_tie_is_refused_with_both_sequences():
    with pytest.raises(parity.ParityError) as err:
        _check([[1, 2, 9], [3, 9]], [[1, 4, 9], [3, 9]], gap=0.5)
    text = str(err.value)
    assert "greedy@batch1 image 0: parted at step 1" in text
    assert "HF [1, 2, 9] vs runtime [1, 4, 9]" in text


def test_a_bfloat16_near_tie_is_measured_in_units_in_the_last_place_of_the_score():
    from export.parity import tolerance

    # seen on an H200: bf16 HF and runtime parted where the top two logits were 10.75 and 10.6875, one ulp apart
    assert tolerance("bfloat16", 10.75) == 2 * 0.0625 and 10.75 - 10.6875 <= tolerance("bfloat16", 10.75)
    assert tolerance("bfloat16", 0.3) == 5e-2  # small scores keep the absolute floor
    assert tolerance("float32", 10.75) == 1e-3  # float32's ulp is far below its floor
