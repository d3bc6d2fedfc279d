"""The opening of every per-run table in BENCHMARKS.md's appendix: its title, date, machine, load and run key."""

from __future__ import annotations

from pathlib import Path

# what a run measured, by its key's prefix, for a run recorded without a title (the first prefix that matches wins)
KINDS = (
    ("model_", "Model level"),
    ("decode_", "Decode: CUDA graphs vs eager vs HF"),
    ("cold_start", "Worker cold start"),
    ("agent", "Agent against a naive worker"),
    ("soak", "Soak"),
    ("load_phases", "Load phase by phase"),
    ("process", "Whole process"),
    ("cpu_settings", "CPU settings on the demo captioner"),
    ("roofline", "CPU against its limit"),
    ("packed_linears", "Decode linears on oneDNN-packed weights"),
    ("peers", "CPU against its peers"),
)


def machine(m: dict | None) -> str:
    """Where a run's numbers were taken, in a few words."""
    if not m:
        return "machine not recorded"
    if m.get("cuda"):
        return f"{m['cuda']} ({m['cores']}-core {m['cpu']} host), torch {m['torch']}"
    waits = f", OMP_WAIT_POLICY {m['omp_wait_policy']}" if m.get("omp_wait_policy") else ""
    return f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['cpu_capability']}){waits}"


def heading(key: str, section: dict, what: str = "") -> list[str]:
    """The run's title and date, then one line: what was run, on what machine and load, and the run's key."""
    kind = next((label for prefix, label in KINDS if key.startswith(prefix)), key)
    title, date = section.get("title") or kind, section.get("date", "date not recorded")
    before = section.get("machine_before") or section.get("machine")
    facts = [what] if what else []
    facts.append(machine(before) if before else "")
    if before:
        after = section.get("machine_after")
        facts.append(
            f"load average {before['loadavg_1_5_15']}" + (f" before, {after['loadavg_1_5_15']} after" if after else "")
        )
    if section.get("artifact"):
        facts.append(f"artifact `{Path(section['artifact']).name}`")
    facts.append(f"run `{key}`")
    return [f"#### {title} ({date})", "", "; ".join(f for f in facts if f) + ".", ""]
