"""Exports of courses to files before a TTL change shortens their history (a policy's
`exportBeforeTTLChange`; README, "Exporting a course"). The lines come from
`nextcampus_common.export`; here they are written to `<course>-<UTC time>.ndjson` in the
operator's export directory, under a temporary name until the last line is written, so a
file with the final name is always a complete export."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
from collections.abc import AsyncIterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

# Lines written per write call: a few hundred KB in the buffer, never the whole course.
LINES_PER_WRITE = 500


@dataclass(frozen=True, slots=True)
class ExportResult:
    course_id: str
    at: datetime.datetime
    path: Path | None  # None: refused, nothing written
    messages: int = 0
    refusal: str = ""  # why not, when refused

    @property
    def refused(self) -> bool:
        return self.path is None


class ExportDirectory:
    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    def file_name(self, course_id: str, at: datetime.datetime) -> str:
        """Course ids are `A-Z a-z 0-9 . _ -` only (ids.COURSE_ID): safe as a file name."""
        return f"{course_id}-{at.strftime('%Y%m%dT%H%M%S.%fZ')}.ndjson"

    async def write(
        self, course_id: str, lines: AsyncIterable[str], at: datetime.datetime
    ) -> ExportResult:
        """Write the export (a refusal when it cannot be: `ExportResult.refused`). Any other
        error of the lines' source (Redis away) propagates, and leaves no file."""
        if self.directory is None:
            return ExportResult(
                course_id,
                at,
                None,
                refusal="no export directory is configured (the operator's export_directory; "
                "the chart's operator.exports.persistence)",
            )
        final = self.directory / self.file_name(course_id, at)
        partial = final.with_name(f".{final.name}.partial")
        try:
            file = await asyncio.to_thread(partial.open, "x", encoding="utf-8")
        except OSError as exc:
            return ExportResult(course_id, at, None, refusal=_cannot_write(self.directory, exc))
        last, complete = "", False
        try:
            with file:
                batch: list[str] = []
                async for line in lines:
                    batch.append(line)
                    last = line
                    if len(batch) == LINES_PER_WRITE:
                        await asyncio.to_thread(_write_lines, file, batch)
                        batch = []
                await asyncio.to_thread(_write_lines, file, batch, sync=True)
            await asyncio.to_thread(os.replace, partial, final)
            complete = True
        except OSError as exc:
            return ExportResult(course_id, at, None, refusal=_cannot_write(self.directory, exc))
        finally:
            if not complete:
                partial.unlink(missing_ok=True)
        # The end line counts the messages (nextcampus_common.export).
        return ExportResult(course_id, at, final, int(json.loads(last)["messages"]))


def _write_lines(file: IO[str], lines: list[str], *, sync: bool = False) -> None:
    file.write("".join(f"{line}\n" for line in lines))
    if sync:  # on the volume before the rename makes it the complete export
        file.flush()
        os.fsync(file.fileno())


def _cannot_write(directory: Path, exc: OSError) -> str:
    return f"cannot write to the export directory {directory}: {exc.strerror or exc}"
