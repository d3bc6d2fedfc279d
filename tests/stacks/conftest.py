"""The stack tests' session fixtures: the app synthesized once with the default settings (cdk.json)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def synthesized():
    """The stack synthesized once with the default settings (cdk.json), shared by the template tests."""
    from stacks.synth import synthesize

    return synthesize()


@pytest.fixture(scope="session")
def template(synthesized):
    from aws_cdk.assertions import Template

    return Template.from_json(synthesized.template)
