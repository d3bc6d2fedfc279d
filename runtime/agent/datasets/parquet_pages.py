"""The page headers of a Parquet column chunk, read before pyarrow decodes it: what its pages will allocate.

A shard's footer says how large its column chunks are, but pyarrow allocates what each page header declares
(`uncompressed_page_size`, then decompresses into it), and the two are written independently: a shard whose footer
says kilobytes can hold a page that decompresses to gigabytes. So the pages pyarrow will read are walked here, in
the bytes pyarrow will read them from, the way its page reader walks them (parquet/column_reader.cc,
`SerializedPageReader::NextPage`: pages until the chunk's `num_values` are seen, other page types skipped), and
their declared sizes are added up for the caller to bound.

Byte-array pages must be PLAIN or dictionary encoded: DELTA_BYTE_ARRAY lets a value repeat the previous value's
bytes, so what it decodes to is bounded by the row count times the value size, not by the file; and the byte-array
leaves are read as dictionaries, which pyarrow 20 cannot build from DELTA_LENGTH_BYTE_ARRAY pages.

The headers are Thrift compact protocol (parquet.thrift `PageHeader`); this reader knows the few fields it needs
and skips the rest, each length checked against the bytes that remain and the nesting depth bounded.
"""
from __future__ import annotations

import dataclasses

from runtime.agent.datasets.samples import ShardError

DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 2, 3
PLAIN, PLAIN_DICTIONARY, RLE_DICTIONARY = 0, 2, 8
ENCODINGS = {0: "PLAIN", 2: "PLAIN_DICTIONARY", 3: "RLE", 4: "BIT_PACKED", 5: "DELTA_BINARY_PACKED",
             6: "DELTA_LENGTH_BYTE_ARRAY", 7: "DELTA_BYTE_ARRAY", 8: "RLE_DICTIONARY", 9: "BYTE_STREAM_SPLIT"}
BYTE_ARRAY_DATA = {PLAIN, PLAIN_DICTIONARY, RLE_DICTIONARY}
BYTE_ARRAY_DICTIONARY = {PLAIN, PLAIN_DICTIONARY}
MAX_DEPTH = 16
SPARE_PAGES = 16  # pages beyond one per value: a dictionary page, index pages; more would only cost CPU to walk


@dataclasses.dataclass(frozen=True)
class Page:
    """One page header's sizes: `values` and `encoding` are those of a data or dictionary page, else None."""

    kind: int
    uncompressed: int
    compressed: int
    values: int | None
    encoding: int | None


class _Compact:
    """A cursor over Thrift compact-protocol bytes; every read is checked against the end."""

    def __init__(self, data: memoryview, at: int):
        self.data, self.at = data, at

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise ValueError("cut off")
        self.at += 1
        return self.data[self.at - 1]

    def varint(self) -> int:
        value = shift = 0
        while True:
            part = self.byte()
            value |= (part & 0x7F) << shift
            if not part & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ValueError("varint over 64 bits")

    def integer(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def skip_bytes(self, n: int) -> None:
        if n < 0 or n > len(self.data) - self.at:
            raise ValueError(f"a length of {n} past the end")
        self.at += n

    def fields(self):
        """(field id, type) of each field of a struct, up to its stop byte."""
        last = 0
        while True:
            head = self.byte()
            if head == 0:
                return
            kind, delta = head & 0x0F, head >> 4
            last = last + delta if delta else self.integer()
            yield last, kind

    def skip(self, kind: int, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise ValueError("nested too deep")
        if kind in (1, 2):  # booleans: their value is in the field header
            return
        if kind == 3:
            self.skip_bytes(1)
        elif kind in (4, 5, 6):
            self.varint()
        elif kind == 7:
            self.skip_bytes(8)
        elif kind == 8:
            self.skip_bytes(self.varint())
        elif kind in (9, 10):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            self._skip_items(size, [head & 0x0F], depth)
        elif kind == 11:
            size = self.varint()
            if size:
                types = self.byte()
                self._skip_items(size, [types >> 4, types & 0x0F], depth)
        elif kind == 12:
            for _, inner in self.fields():
                self.skip(inner, depth + 1)
        else:
            raise ValueError(f"unknown type {kind}")

    def _skip_items(self, size: int, kinds: list[int], depth: int) -> None:
        if size > len(self.data) - self.at:  # every item takes at least a byte
            raise ValueError(f"{size} items past the end")
        for _ in range(size):
            for kind in kinds:
                if kind in (1, 2):
                    self.skip_bytes(1)  # a boolean inside a list or map is a byte of its own
                else:
                    self.skip(kind, depth + 1)

    def page_header(self) -> Page:
        """The PageHeader at the cursor: type (1), sizes (2, 3), and the header its type reads (5, 7 or 8)."""
        ints: dict[int, int] = {}
        headers: dict[int, tuple[int | None, int | None]] = {}
        for field, kind in self.fields():
            if field in (1, 2, 3) and kind == 5:
                ints[field] = self.integer()
            elif field in (5, 7, 8) and kind == 12:
                headers[field] = self._data_header(encoding_field=4 if field == 8 else 2)
            else:
                self.skip(kind)
        if len(ints) != 3:
            raise ValueError("a page header without its type and sizes")
        kind = ints[1]
        own = {DATA_PAGE: 5, DICTIONARY_PAGE: 7, DATA_PAGE_V2: 8}.get(kind)
        if own is not None and (own not in headers or headers[own][0] is None):
            raise ValueError("a data or dictionary page without its own header")
        values, encoding = headers[own] if own is not None else (None, None)
        return Page(kind, ints[2], ints[3], values, encoding)

    def _data_header(self, encoding_field: int) -> tuple[int | None, int | None]:
        """(num_values, encoding) of a DataPageHeader, DictionaryPageHeader or DataPageHeaderV2."""
        values = encoding = None
        for field, kind in self.fields():
            if field == 1 and kind == 5:
                values = self.integer()
            elif field == encoding_field and kind == 5:
                encoding = self.integer()
            else:
                self.skip(kind, 1)
        return values, encoding


def walk(chunk: bytes, *, num_values: int, byte_array: bool, rows: int, where: str) -> list[Page]:
    """The pages pyarrow's reader will read from `chunk` (the bytes of its column range), or ShardError.

    Each page's sizes must be non-negative and its bytes inside the chunk; a data page holds at most `rows` values
    (the columns read are flat: one value per row); byte-array pages must be PLAIN or dictionary encoded; and there
    are at most SPARE_PAGES more pages than values (pages of no values would make the walk as long as the bytes).
    """
    view, at, seen, pages = memoryview(chunk), 0, 0, []
    while seen < num_values:
        if len(pages) > num_values + SPARE_PAGES:
            raise ShardError(f"{where}: over {len(pages) - 1:,} pages for {num_values:,} values")
        if at >= len(view):
            raise ShardError(f"{where}: the pages end at byte {at:,} with {seen:,} of its {num_values:,} values")
        cursor = _Compact(view, at)
        try:
            page = cursor.page_header()
        except ValueError as error:
            raise ShardError(f"{where}: the page header at byte {at:,} of the chunk is unreadable ({error})") from None
        if page.uncompressed < 0 or page.compressed < 0 or (page.values is not None and page.values < 0):
            raise ShardError(f"{where}: the page header at byte {at:,} has a negative size or count")
        if page.compressed > len(view) - cursor.at:
            raise ShardError(f"{where}: the page at byte {at:,} holds {page.compressed:,} bytes, past the chunk's end")
        if page.kind in (DATA_PAGE, DATA_PAGE_V2):
            if page.values > rows:
                raise ShardError(f"{where}: a page of {page.values:,} values in a row group of {rows:,} rows")
            seen += page.values
        _check_encoding(page, byte_array, where)
        pages.append(page)
        at = cursor.at + page.compressed
    return pages


def _check_encoding(page: Page, byte_array: bool, where: str) -> None:
    if not byte_array or page.kind not in (DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2):
        return
    allowed = BYTE_ARRAY_DICTIONARY if page.kind == DICTIONARY_PAGE else BYTE_ARRAY_DATA
    if page.encoding not in allowed:
        name = ENCODINGS.get(page.encoding, str(page.encoding))
        raise ShardError(f"{where}: a page is {name}-encoded; byte-array columns are read only PLAIN or dictionary "
                         f"encoded (their decoded size is then bounded by the file): rewrite the shard with those "
                         f"(pyarrow's and HF datasets' defaults)")


def declared_bytes(pages: list[Page]) -> int:
    """What decoding the pages allocates by their headers: the uncompressed size of every page pyarrow decodes."""
    return sum(page.uncompressed for page in pages if page.kind in (DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2))
