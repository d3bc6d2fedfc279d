"""Resolve generation settings and special token ids from the checkpoint, refusing settings the runtime lacks."""

from __future__ import annotations

from export.errors import UnsupportedGeneration

_DEFAULTS = {
    "do_sample": False,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "encoder_repetition_penalty": 1.0,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "num_return_sequences": 1,
}


def _single(value, what: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise UnsupportedGeneration(f"{what} has several ids {list(value)}; the runtime supports exactly one")
        value = value[0]
    if value is None:
        raise UnsupportedGeneration(f"the checkpoint sets no {what}; set it in its generation config")
    return int(value)


def generation_settings(
    model, family, max_new_tokens: int | None, num_beams: int | None, start_token_id: int | None = None
) -> dict:
    """The manifest's generation block: start/eos/pad ids, length, beams, length penalty, early stopping;
    `start_token_id` is one a prompt fixed at export (a decoder-only family's last prompt token)."""
    gc = model.generation_config
    for key, default in _DEFAULTS.items():
        value = getattr(gc, key, default)
        if value not in (default, None) and not (key == "min_length" and value == 0):
            raise UnsupportedGeneration(
                f"generation config sets {key}={value!r}; the runtime's decoding supports greedy and beam search "
                f"only. Edit the checkpoint's generation_config.json or ask for {key} support"
            )
    start, eos, pad = family.token_ids(model)
    start = start if start_token_id is None else start_token_id
    if max_new_tokens is None:
        max_new_tokens = gc.max_new_tokens if gc.max_new_tokens is not None else gc.max_length - 1
    early = gc.early_stopping
    forced_bos, forced_eos = getattr(gc, "forced_bos_token_id", None), getattr(gc, "forced_eos_token_id", None)
    return {
        "start_token_id": _single(start, "decoder start token id"),
        "eos_token_id": _single(eos, "end-of-sequence token id"),
        "pad_token_id": None if pad is None else _single(pad, "pad token id"),
        "max_new_tokens": int(max_new_tokens),
        "num_beams": int(num_beams if num_beams is not None else gc.num_beams or 1),
        "length_penalty": float(gc.length_penalty if gc.length_penalty is not None else 1.0),
        "early_stopping": early if early in (True, False, "never") else False,
        # HF's ForcedBOS/ForcedEOS logits processors (BART-style decoders); runtime.decode applies the same
        "forced_bos_token_id": None if forced_bos is None else _single(forced_bos, "forced BOS token id"),
        "forced_eos_token_id": None if forced_eos is None else _single(forced_eos, "forced EOS token id"),
    }


def hf_generate_kwargs(settings: dict, num_beams: int, family=None) -> dict:
    """The same settings spelled as keyword arguments to HF `generate`, for the parity run. The EOS id is passed
    only for a family whose checkpoints list several (BLIP's own `generate` sets it and refuses a second)."""
    return {
        "max_new_tokens": settings["max_new_tokens"],
        "num_beams": num_beams,
        "do_sample": False,
        **({"eos_token_id": settings["eos_token_id"]} if getattr(family, "generate_eos", False) else {}),
        "length_penalty": settings["length_penalty"],
        "early_stopping": settings["early_stopping"],
    }
