"""Whether every index of a job (or of a run) is finished, at a bounded number of LIST requests per finish.

Each finished index has one object (`key_of(index)`) in one folder. Listing the whole folder after every finish
would cost a job of n indexes about n * n / 2,000 LIST pages; instead a finisher lists only its group of GROUP
indexes (one request from the group's first key: six-digit indexes, all below 1,000,000, sort in index order, and
the results bucket is a general purpose bucket, which lists in key order). The finisher that sees its group whole
writes the group's object under `<root>groups/` and lists those (one page for up to 1,000 groups); a job of one
group needs neither. Every finisher writes before it lists and S3 lists are strongly consistent, so of finishers
racing, at least one sees the whole: completion is seen at least once, never missed (its writer is idempotent).
"""

from __future__ import annotations

from typing import Callable, Sequence

from runtime.agent.layout import GROUPS, group_marker

GROUP = 1000  # indexes per group: at most the 1,000 keys S3 returns per LIST, so a group is one request


def _members(indexes: Sequence[int], group: int) -> Sequence[int]:
    first, end = group * GROUP, (group + 1) * GROUP
    if isinstance(indexes, range) and indexes.step == 1:
        return range(max(indexes.start, first), min(indexes.stop, end))
    return [index for index in indexes if first <= index < end]


def _groups(indexes: Sequence[int]) -> set[int]:
    if isinstance(indexes, range) and indexes.step == 1:
        return set(range(indexes.start // GROUP, (indexes.stop - 1) // GROUP + 1)) if len(indexes) else set()
    return {index // GROUP for index in indexes}


def _group_whole(s3, bucket: str, folder: str, key_of: Callable[[int], str], members: Sequence[int]) -> bool:
    """True when every index of `members` (one group) has its object: one LIST of up to GROUP keys."""
    first = min(members)
    start = {"StartAfter": key_of(first - 1)} if first else {}
    reply = s3.list_objects_v2(Bucket=bucket, Prefix=folder, MaxKeys=GROUP, **start)
    listed = {entry["Key"] for entry in reply.get("Contents", [])}
    return all(key_of(index) in listed for index in members)


def finished(
    s3, bucket: str, folder: str, key_of: Callable[[int], str], root: str, index: int, indexes: Sequence[int]
) -> bool:
    """After `index`'s object `key_of(index)` (under `folder`) is written: True when every index of `indexes` has one.

    `root` (a job's or a run's) holds the group objects. Costs one LIST, and when `index` completed its group of
    a job of several groups, one PUT and one LIST more.
    """
    group = index // GROUP
    if not _group_whole(s3, bucket, folder, key_of, _members(indexes, group)):
        return False
    groups = _groups(indexes)
    if groups == {group}:
        return True
    s3.put_object(Bucket=bucket, Key=group_marker(root, group), Body=b"")
    listed = {
        entry["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=root + GROUPS)
        for entry in page.get("Contents", [])
    }
    return all(group_marker(root, other) in listed for other in groups)
