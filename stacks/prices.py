"""On-demand hourly prices (USD, Linux, us-east-1) of the GPU instance types the fleet may use.

`make status` multiplies the fleet's instance-hours by these to show the cost per 1,000 images and the idle
cost. They are the default of the `instance_prices` setting: override them in cdk.json ("instance_prices":
{"g5.xlarge": 1.006}) or with `-c instance_prices=g5.xlarge=1.006,g6.xlarge=0.805`, e.g. for another region,
spot, or a savings plan. Prices change; the tool prints PRICES_READ_ON next to every cost.
"""
from __future__ import annotations

PRICES_READ_ON = "2026-11-30"
PRICES_SOURCE = "https://aws.amazon.com/ec2/pricing/on-demand/"
# Where each figure was read. g5.xlarge: $1.006/h in us-east-1 quoted by factualminds.com's "Amazon EC2
# On-Demand Pricing ... (2026)" (published 2026-06-17), read on PRICES_READ_ON. The other three could not be
# confirmed from a source reachable here: they are the long-standing us-east-1 list prices as remembered,
# TO BE CHECKED against PRICES_SOURCE before trusting a cost figure made with them.
CONFIRMED = {"g5.xlarge": "https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/"}
INSTANCE_PRICES = {
    "g4dn.xlarge": 0.526,  # to be checked
    "g5.xlarge": 1.006,
    "g6.xlarge": 0.8048,  # to be checked
    "g6e.xlarge": 1.861,  # to be checked
}


def price_note(instance_type: str) -> str:
    """'confirmed <date>' or 'to be checked': how far a price in the default table can be trusted."""
    if instance_type in CONFIRMED:
        return f"read {PRICES_READ_ON}"
    return "to be checked" if instance_type in INSTANCE_PRICES else "not in the table"
