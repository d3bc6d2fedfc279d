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
# On-Demand Pricing ... (2026)" (published 2026-06-17), read on PRICES_READ_ON. GPUAUDIT's table (read
# 2026-12-01; its own note: "on-demand us-east-1 as of Q1 2026") gives the g4dn, g5 and g6 figures below, and
# agrees with that g5.xlarge figure. For g6e it disagrees with the long-standing list prices as remembered (it
# says g6e.12xlarge $13.80, g6e.24xlarge $18.36, g6e.48xlarge $36.72): the g6e figures here are the remembered
# ones, TO BE CHECKED against PRICES_SOURCE before trusting a cost figure made with them. A third-party table is
# not AWS's price list either: check the figures of the types you deploy there.
FACTUALMINDS = "https://www.factualminds.com/blog/amazon-ec2-on-demand-pricing-instance-families-2026/"
GPUAUDIT = "https://github.com/gpuaudit/cli/blob/main/internal/pricing/gpu_specs.go"
CONFIRMED = {
    "g5.xlarge": FACTUALMINDS,
    **{
        t: GPUAUDIT
        for t in (
            "g4dn.xlarge",
            "g4dn.12xlarge",
            "g5.12xlarge",
            "g5.24xlarge",
            "g5.48xlarge",
            "g6.xlarge",
            "g6.12xlarge",
            "g6.24xlarge",
            "g6.48xlarge",
        )
    },
}
INSTANCE_PRICES = {
    "g4dn.xlarge": 0.526,
    "g4dn.12xlarge": 3.912,  # 4 x T4
    "g5.xlarge": 1.006,
    "g5.12xlarge": 5.672,  # 4 x A10G
    "g5.24xlarge": 8.144,  # 4 x A10G, twice the vCPUs
    "g5.48xlarge": 16.288,  # 8 x A10G
    "g6.xlarge": 0.8048,
    "g6.12xlarge": 4.6016,  # 4 x L4
    "g6.24xlarge": 7.1456,  # 4 x L4, twice the vCPUs
    "g6.48xlarge": 13.35,  # 8 x L4
    "g6e.xlarge": 1.861,  # to be checked
    "g6e.12xlarge": 10.4926,  # 4 x L40S; to be checked
    "g6e.24xlarge": 15.0656,  # 4 x L40S; to be checked
    "g6e.48xlarge": 30.1312,  # 8 x L40S; to be checked
}


def price_note(instance_type: str) -> str:
    """'confirmed <date>' or 'to be checked': how far a price in the default table can be trusted."""
    if instance_type in CONFIRMED:
        return f"read {PRICES_READ_ON}"
    return "to be checked" if instance_type in INSTANCE_PRICES else "not in the table"
