"""The deploy settings: cdk.json defaults, `-c` overrides as strings, and errors that say what to fix."""

import json
from pathlib import Path

import pytest

from stacks.settings import CONTEXT_KEY, DLAMI_PARAMETER, Settings, SettingsError

CDK_JSON = json.loads((Path(__file__).resolve().parents[2] / "cdk.json").read_text())


def context(block=None, **overrides):
    values = {CONTEXT_KEY: CDK_JSON["context"][CONTEXT_KEY] if block is None else block, **overrides}
    return values.get


def test_cdk_json_holds_every_setting_with_the_issue_defaults():
    block = CDK_JSON["context"][CONTEXT_KEY]
    settings = Settings.from_context(context())
    assert set(block) == {f for f in Settings.__dataclass_fields__}
    assert settings.instance_types == ("g5.xlarge",)
    assert (settings.min_capacity, settings.max_capacity, settings.spot) == (0, 2, False)
    assert settings.ami == DLAMI_PARAMETER and settings.ami_is_parameter
    assert settings.alarm_email is None


def test_command_line_strings_override_the_cdk_json_block():
    settings = Settings.from_context(
        context(
            instance_types="g5.xlarge, g6.xlarge",
            spot="true",
            max_capacity="4",
            ami="ami-0123456789abcdef0",
            image_suffixes=".jpg,.png",
            alarm_email="ops@example.com",
        )
    )
    assert settings.instance_types == ("g5.xlarge", "g6.xlarge")
    assert settings.spot is True and settings.max_capacity == 4
    assert settings.ami == "ami-0123456789abcdef0" and not settings.ami_is_parameter
    assert settings.image_suffixes == (".jpg", ".png")
    assert settings.alarm_email == "ops@example.com"


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings().max_capacity = 10


def test_unknown_key_in_the_block_is_refused():
    with pytest.raises(SettingsError, match=r"unknown setting\(s\) \['max_capacty'\]"):
        Settings.from_context(context(block={"max_capacty": 3}))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"results_prefix": "incoming/results/"}, "results would become jobs"),
        ({"images_prefix": "/incoming"}, "expected a key prefix"),
        ({"visibility_timeout_s": 200, "max_batch_s": 180}, "at least twice max_batch_s=180"),
        ({"min_capacity": 3, "max_capacity": 2}, "expected 0 <= min <= max"),
        ({"ami": "ubuntu"}, "expected an AMI id"),
        ({"instance_types": ""}, "expected one or more like g5.xlarge"),
        ({"spot": "maybe"}, "expected true or false"),
        ({"batch_size": "eight"}, "expected a whole number"),
        ({"log_retention_days": 10}, "CloudWatch accepts one of"),
        ({"alarm_email": "ops"}, "expected an e-mail address"),
        ({"image_suffixes": "jpg"}, "expected one or more like .jpg"),
        ({"torch_index_url": "https://download.pytorch.org/whl/cu128"}, "torch 2.13.0 has no cu128 build"),
        ({"torch_index_url": "https://example.com/simple"}, "expected one of"),
        ({"instance_types": "g5.xlarge,m5.large"}, "'m5.large': not a GPU family CaptionKit knows"),
        ({"instance_types": "p3.2xlarge"}, r"V100 \(compute capability 7.0\) is not in torch 2.13's CUDA 13.0 build"),
        ({"root_volume_gb": 60}, "at least 75, the DLAMI's root snapshot size"),
        ({"stalled_minutes": 5}, "longer than a worker's boot"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_setting(overrides, message):
    with pytest.raises(SettingsError, match=message) as error:
        Settings.from_context(context(**overrides))
    assert "cdk -c key=value" in str(error.value)


@pytest.mark.parametrize("instance_type", ["g4dn.xlarge", "g5.xlarge", "g6.xlarge", "g6e.xlarge"])
def test_the_default_torch_build_serves_every_gpu_the_settings_offer(instance_type):
    assert Settings.from_context(context(instance_types=instance_type)).torch_index_url == "https://pypi.org/simple"


def test_an_older_gpu_is_served_by_the_cuda_12_6_index():
    settings = Settings.from_context(
        context(instance_types="p3.2xlarge", torch_index_url="https://download.pytorch.org/whl/cu126")
    )
    assert settings.instance_types == ("p3.2xlarge",)


def test_cdk_json_image_suffixes_are_every_accepted_type_in_both_cases():
    from runtime.images.formats import IMAGE_SUFFIXES, case_variants

    assert tuple(CDK_JSON["context"][CONTEXT_KEY]["image_suffixes"]) == case_variants() == Settings().image_suffixes
    assert {".gif", ".GIF", ".WEBP", ".TIFF"} <= set(Settings.from_context(context()).image_suffixes)
    assert set(IMAGE_SUFFIXES) < set(case_variants())
