"""Multi-GPU instance types: the GPU table, the price list, and the settings that refuse a fleet the per-instance
backlog target cannot serve."""

import re

import pytest

from stacks.gpu_stack import GPU_FAMILIES
from stacks.instance_types import INSTANCE_GPUS, gpu_count
from stacks.prices import CONFIRMED, INSTANCE_PRICES, price_note
from stacks.settings import Settings, SettingsError
from tools import cost

MULTI_GPU = {
    "g5.12xlarge": 4,
    "g6.12xlarge": 4,
    "g6e.12xlarge": 4,
    "g5.48xlarge": 8,
    "g6.48xlarge": 8,
    "g6e.48xlarge": 8,
    "g4dn.12xlarge": 4,
}


@pytest.mark.parametrize("instance_type, gpus", sorted(MULTI_GPU.items()))
def test_multi_gpu_types_are_in_the_table_the_price_list_and_the_settings(instance_type, gpus):
    assert gpu_count(instance_type) == gpus
    assert instance_type in INSTANCE_PRICES
    assert Settings.from_mapping({"instance_types": instance_type}).instance_types == (instance_type,)


def test_every_priced_type_has_its_gpus_in_the_table_and_every_table_family_is_a_known_gpu():
    assert set(INSTANCE_PRICES) <= set(INSTANCE_GPUS)
    assert {t.split(".", 1)[0] for t in INSTANCE_GPUS} <= set(GPU_FAMILIES)
    assert all(n in (1, 4, 8) and vcpus % 4 == 0 for n, vcpus in INSTANCE_GPUS.values())


def test_every_price_is_either_read_from_a_cited_source_or_marked_to_be_checked():
    assert all(url.startswith("https://") for url in CONFIRMED.values())
    for instance_type in INSTANCE_PRICES:
        assert re.fullmatch(r"read \d{4}-\d{2}-\d{2}|to be checked", price_note(instance_type)), instance_type
    assert price_note("g6e.12xlarge") == "to be checked"  # the two sources disagree
    assert "g5.12xlarge $5.672/h read" in cost.hourly_price(["g5.12xlarge"], INSTANCE_PRICES)[1]


def test_a_fleet_mixing_gpu_counts_is_refused_with_the_reason():
    with pytest.raises(SettingsError, match=r"mixes GPU counts \(g5.xlarge: 1, g5.12xlarge: 4\): the backlog target"):
        Settings.from_mapping({"instance_types": "g5.xlarge,g5.12xlarge"})
    assert Settings.from_mapping({"instance_types": "g5.12xlarge,g6.12xlarge,g6e.12xlarge", "spot": "true"})


def test_a_size_missing_from_the_gpu_table_is_refused_with_where_to_add_it():
    with pytest.raises(SettingsError, match=r"g5.96xlarge: not in stacks/instance_types.py's table"):
        Settings.from_mapping({"instance_types": "g5.96xlarge"})
