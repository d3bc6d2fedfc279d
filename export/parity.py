"""The parity gate: HF `generate` and the runtime's own loop on the same pixels must give the same tokens."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from export.errors import ParityError
from export.settings import hf_generate_kwargs
from runtime.decode.state import Trace

NEAR_TIE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 1e-2}
# In bfloat16 a logit near 10 is only representable to 0.0625 (one unit in the last place), so two
# implementations that sum in different orders part by a whole ulp or two (BENCHMARKS.md has the case): the
# tolerance is the larger of the absolute one above and ULPS units in the last place of the step's top score.
ULPS = 2


def tolerance(dtype: str, score: float) -> float:
    """The largest top-two gap that still counts as a near-tie for a step whose best score is `score`."""
    if not score or not math.isfinite(score):
        return NEAR_TIE[dtype]
    ulp = torch.finfo(getattr(torch, dtype)).eps * 2.0 ** math.floor(math.log2(abs(score)))
    return max(NEAR_TIE[dtype], ULPS * ulp)


@dataclass
class ParityReport:
    """What was compared, what matched, what parted at a near-tie, and what failed."""

    cases: list[str] = field(default_factory=list)
    sequences: int = 0
    identical: int = 0
    near_ties: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    max_logit_diff: float = 0.0

    def summary(self) -> str:
        return (
            f"parity: {self.identical}/{self.sequences} sequences token-identical over {len(self.cases)} cases "
            f"({', '.join(self.cases)}); {len(self.near_ties)} near-tie(s); largest first-step logit "
            f"difference {self.max_logit_diff:.2e}"
        )


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def first_difference(a: list[int], b: list[int]) -> int:
    """The first step at which two token lists part (the shorter one's length when one extends the other)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _hf_tokens(loaded, pixels: torch.Tensor, settings: dict, beams: int) -> tuple[list[list[int]], list]:
    out = loaded.model.generate(
        **loaded.family.hf_inputs(loaded, pixels),
        return_dict_in_generate=True,
        output_scores=True,
        **hf_generate_kwargs(settings, beams, loaded.family),
    )
    prompt = loaded.family.hf_prompt_length(loaded)
    rows = [_until_eos(r[prompt:].tolist(), settings["eos_token_id"]) for r in out.sequences]
    return rows, out.scores


def check(
    loaded,
    captioner,
    pixels: torch.Tensor,
    settings: dict,
    dtype: str,
    batch_sizes: tuple[int, ...],
    beam_counts: tuple[int, ...],
    progress=None,
) -> ParityReport:
    """Run every (beams, batch) case; raise `ParityError` with a readable report on a real mismatch.

    `loaded` is the HF side (`export.load.Loaded`: model, tokenizer, processor, and the family that says how
    HF is called and how its captions read)."""
    report = ParityReport()
    eos = settings["eos_token_id"]
    for beams in beam_counts:
        for batch in batch_sizes:
            name = f"{'greedy' if beams == 1 else f'beam{beams}'}@batch{batch}"
            report.cases.append(name)
            px = pixels[:batch]
            with torch.inference_mode():
                hf_rows, hf_scores = _hf_tokens(loaded, px, settings, beams)
            trace = Trace()
            ours = [_until_eos(r, eos) for r in captioner.generate_ids(px, num_beams=beams, trace=trace)]
            if beams == 1:
                first = torch.tensor([t[0][0][1] for t in trace.top])
                report.max_logit_diff = max(
                    report.max_logit_diff, float((hf_scores[0].float().max(dim=-1).values - first).abs().max())
                )
            for i, (theirs, mine) in enumerate(zip(hf_rows, ours)):
                report.sequences += 1
                if theirs == mine:
                    _check_text(loaded, captioner, theirs, name, i, report)
                    report.identical += 1
                    continue
                step = first_difference(theirs, mine)
                gap = min(trace.gaps[i][: step + 1] or [float("inf")])
                tied = parted_at_near_tie(trace, i, step, dtype)
                detail = (
                    f"{name} image {i}: parted at step {step}; HF {theirs} vs runtime {mine}; "
                    f"smallest top-score gap up to there {gap:.2e}; runtime top scores at step {step}: "
                    f"{trace.top[i][step][:4] if step < len(trace.top[i]) else 'n/a'}"
                )
                (report.near_ties if tied else report.failures).append(detail)
            if progress:
                progress(name)
    if report.failures:
        raise ParityError(
            "token mismatch beyond a near-tie (tolerance {:.0e}, or {} ulps of the step's top score "
            "in {}):\n  {}".format(NEAR_TIE[dtype], ULPS, dtype, "\n  ".join(report.failures))
        )
    return report


def parted_at_near_tie(trace: Trace, image: int, step: int, dtype: str) -> bool:
    """The gate's near-tie rule: some step up to `step` (where two decodes of `image` part) had its top two scores
    within `tolerance(dtype, ...)` in `trace`, so a difference in the last bits could pick either token."""
    gaps = trace.gaps[image][: step + 1] if image < len(trace.gaps) else []
    return any(g <= tolerance(dtype, _best(trace, image, s)) for s, g in enumerate(gaps))


def _best(trace: Trace, image: int, step: int) -> float:
    tops = trace.top[image][step] if image < len(trace.top) and step < len(trace.top[image]) else []
    return tops[0][1] if tops else 0.0


def _check_text(loaded, captioner, ids: list[int], name: str, i: int, report: ParityReport) -> None:
    theirs = loaded.family.hf_text(loaded, ids)
    mine = captioner.text.decode(ids)
    if theirs != mine:
        report.failures.append(
            f"{name} image {i}: same tokens {ids} but text differs: HF {theirs!r} vs runtime {mine!r}"
        )
