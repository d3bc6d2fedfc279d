"""`python -m tools.gallery CAPTIONS | --prefix s3://.. | --job ID --out page.html`: one review page of captions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator

import botocore.exceptions
from tqdm import tqdm

from runtime.errors import CaptionKitError
from tools.review_page import Cell, Item, render
from tools.review_rows import DEFAULT_SAMPLE
from tools.thumbnails import THUMB_PX, thumbnails


def page(
    pairs: Iterable[tuple[dict, bytes | None]],
    title: str,
    *,
    total: int | None = None,
    expected: int | None = None,
    px: int = THUMB_PX,
) -> tuple[str, int]:
    """The gallery page of (row, image bytes) pairs, consumed as thumbnails are made; and how many rows it shows.
    `total`: how many rows the sample was drawn from; `expected`: how many pairs will come (for the progress bar)."""
    rows: list[dict] = []

    def images() -> Iterator[bytes | None]:
        for row, image in tqdm(pairs, desc="thumbnails", unit="image", total=expected, disable=None, file=sys.stderr):
            rows.append(row)
            yield image

    thumbs = thumbnails(images(), px)
    items = [
        Item(
            key=str(row["key"]),
            uri=str(row["uri"]),
            thumb=thumb,
            cells=[Cell(caption=row["caption"], error=row["error"], model=row.get("model"))],
        )
        for row, thumb in zip(rows, thumbs)
    ]
    errors = sum(1 for row in rows if row["error"] is not None)
    drawn = f" (a seeded sample of {total:,} rows)" if total is not None and total > len(rows) else ""
    models = sorted({str(row.get("model")) for row in rows})
    return render(
        title, items, summary=[f"{len(rows):,} images{drawn}, {errors:,} with an error; model {', '.join(models)}"]
    ), len(rows)


def write_page(out: Path, text: str) -> dict:
    """Write the page (UTF-8), saying when it replaces an earlier one; what was written, for the report line."""
    replaced = out.exists()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return {"out": str(out), "bytes": out.stat().st_size, "replaced": replaced}


def _source(args) -> tuple[Iterator[tuple[dict, bytes | None]], int, str]:
    from tools import review_images

    if args.captions:
        return *review_images.local_run(Path(args.captions), args.sample, args.seed), f"captions of {args.captions}"
    from tools import target as targets
    from tools.local_aws import aws_client
    from tools.outputs import stack_outputs

    target = targets.resolve(args.target)
    outputs = stack_outputs(target.stack_name, target.region, target.endpoint_url)
    s3 = aws_client("s3", target.region, target.endpoint_url)
    where = {"results_bucket": outputs["ResultsBucket"], "results_prefix": outputs["ResultsPrefix"]}
    if args.job:
        return *review_images.job(s3, args.job, args.sample, args.seed, **where), f"captions of job {args.job}"
    return *review_images.prefix(s3, args.prefix, args.sample, args.seed, **where), f"captions under {args.prefix}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.gallery", description=__doc__.split(":", 1)[1])
    parser.add_argument("captions", nargs="?", help="a caption run's rows file (.jsonl, .csv or .parquet)")
    parser.add_argument("--prefix", help="instead: the results of s3://<images bucket>/<prefix>/")
    parser.add_argument("--job", metavar="ID", help="instead: a batch or dataset job's rows")
    parser.add_argument("--out", default="gallery.html", help="the page to write (default gallery.html)")
    parser.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE,
        help=f"show this many rows, drawn by a seeded hash (default {DEFAULT_SAMPLE}; 0: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="another seed draws another sample (default 0)")
    parser.add_argument("--target", choices=("local", "aws"), default=None)
    args = parser.parse_args(argv)
    if sum(map(bool, (args.captions, args.prefix, args.job))) != 1:
        parser.error("give exactly one of CAPTIONS (a rows file), --prefix s3://.. or --job ID")
    args.sample = args.sample or None
    try:
        pairs, total, title = _source(args)
        text, shown = page(pairs, title, total=total, expected=min(total, args.sample or total))
        report = write_page(Path(args.out), text)
    except (CaptionKitError, ValueError) as exc:  # RowsError, a malformed s3:// URI: one line, no traceback
        raise SystemExit(f"gallery: {exc}") from None
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise SystemExit(
            f"gallery: cannot read from S3 ({exc}); for AWS set up credentials (`aws configure`), for "
            "the local AWS run `make local-up`"
        ) from None
    if report["replaced"]:
        print(f"gallery: replaced the earlier {args.out}", file=sys.stderr)
    print(json.dumps({**report, "shown": shown, "rows": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
