"""Cost per 1,000 images and idle cost from the fleet's own numbers: instance-hours, images done, hourly prices."""

from __future__ import annotations

import datetime

from stacks.prices import PRICES_READ_ON, price_note

Series = dict[datetime.datetime, float]  # period start -> value (CloudWatch datapoints, one per period)


def hourly_price(instance_types: list[str], prices: dict[str, float]) -> tuple[float | None, str]:
    """The mean price of `instance_types` (running ones, else the configured first choice) and where it came from."""
    missing = [t for t in instance_types if t not in prices]
    if not instance_types or missing:
        return None, (
            f"no price for {', '.join(missing) or 'an unknown type'}: add it to instance_prices in "
            "cdk.json (USD per hour)"
        )
    price = sum(prices[t] for t in instance_types) / len(instance_types)
    notes = sorted({f"{t} ${prices[t]:.4g}/h {price_note(t)}" for t in instance_types})
    return price, f"on-demand, {'; '.join(notes)} (table of {PRICES_READ_ON}; spot costs less)"


def fleet_cost(instances: Series, done: Series, period_s: int, price_per_hour: float | None) -> dict:
    """Instance-hours, cost, idle cost (periods with instances up and no image done) and cost per 1,000 images."""
    hours = sum(instances.values()) * period_s / 3600
    idle_hours = sum(n for t, n in instances.items() if not done.get(t)) * period_s / 3600
    images = int(sum(done.values()))
    report = {
        "instance_hours": round(hours, 3),
        "idle_hours": round(idle_hours, 3),
        "images": images,
        "cost": None,
        "idle_cost": None,
        "per_1000": None,
    }
    if price_per_hour is not None:
        report.update(cost=round(hours * price_per_hour, 4), idle_cost=round(idle_hours * price_per_hour, 4))
        if images:
            report["per_1000"] = round(hours * price_per_hour / images * 1000, 4)
    return report


def run_cost(elapsed_s: float, instances: int, price_per_hour: float | None) -> dict:
    """An estimate of what a run has cost so far: the hours since it was queued x the instances the group holds
    now x the hourly price. Not a bill: the fleet may have grown or shrunk during the run, it counts idle instances
    and other jobs sharing the fleet, and spot instances cost less than the on-demand price used here."""
    hours = elapsed_s / 3600
    return {
        "hours": round(hours, 3),
        "instances": instances,
        "cost": None if price_per_hour is None else round(hours * instances * price_per_hour, 4),
    }
