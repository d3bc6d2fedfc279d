"""The parity gate: HF `generate` and the runtime's own loop on the same pixels must give the same tokens."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from export.settings import hf_generate_kwargs
from runtime.decode import Trace

NEAR_TIE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 1e-2}


class ParityError(RuntimeError):
    """Exported programs and HF `generate` disagree beyond a near-tie; nothing is written."""


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
        return (f"parity: {self.identical}/{self.sequences} sequences token-identical over {len(self.cases)} cases "
                f"({', '.join(self.cases)}); {len(self.near_ties)} near-tie(s); largest first-step logit "
                f"difference {self.max_logit_diff:.2e}")


def _until_eos(ids: list[int], eos: int) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def _first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def _hf_tokens(model, pixels: torch.Tensor, settings: dict, beams: int) -> tuple[list[list[int]], list]:
    out = model.generate(pixel_values=pixels, return_dict_in_generate=True, output_scores=True,
                         **hf_generate_kwargs(settings, beams))
    prompt = 1
    rows = [_until_eos(r[prompt:].tolist(), settings["eos_token_id"]) for r in out.sequences]
    return rows, out.scores


def check(model, tokenizer, captioner, pixels: torch.Tensor, settings: dict, dtype: str,
          batch_sizes: tuple[int, ...], beam_counts: tuple[int, ...], progress=None) -> ParityReport:
    """Run every (beams, batch) case; raise `ParityError` with a readable report on a real mismatch."""
    tol = NEAR_TIE[dtype]
    report = ParityReport()
    eos = settings["eos_token_id"]
    for beams in beam_counts:
        for batch in batch_sizes:
            name = f"{'greedy' if beams == 1 else f'beam{beams}'}@batch{batch}"
            report.cases.append(name)
            px = pixels[:batch]
            with torch.inference_mode():
                hf_rows, hf_scores = _hf_tokens(model, px, settings, beams)
            trace = Trace()
            ours = [_until_eos(r, eos) for r in captioner.generate_ids(px, num_beams=beams, trace=trace)]
            if beams == 1:
                first = torch.tensor([t[0][0][1] for t in trace.top])
                report.max_logit_diff = max(report.max_logit_diff,
                                            float((hf_scores[0].float().max(dim=-1).values - first).abs().max()))
            for i, (theirs, mine) in enumerate(zip(hf_rows, ours)):
                report.sequences += 1
                if theirs == mine:
                    _check_text(tokenizer, captioner, theirs, name, i, report)
                    report.identical += 1
                    continue
                step = _first_difference(theirs, mine)
                gap = min(trace.gaps[i][: step + 1] or [float("inf")])
                detail = (f"{name} image {i}: parted at step {step}; HF {theirs} vs runtime {mine}; "
                          f"smallest top-score gap up to there {gap:.2e}; runtime top scores at step {step}: "
                          f"{trace.top[i][step][:4] if step < len(trace.top[i]) else 'n/a'}")
                (report.near_ties if gap <= tol else report.failures).append(detail)
            if progress:
                progress(name)
    if report.failures:
        raise ParityError("token mismatch beyond a near-tie (tolerance {:.0e}):\n  {}".format(
            tol, "\n  ".join(report.failures)))
    return report


def _check_text(tokenizer, captioner, ids: list[int], name: str, i: int, report: ParityReport) -> None:
    theirs = tokenizer.batch_decode([ids], skip_special_tokens=True)[0]
    mine = captioner.text.decode(ids)
    if theirs != mine:
        report.failures.append(f"{name} image {i}: same tokens {ids} but text differs: HF {theirs!r} vs runtime {mine!r}")
