"""Downloading a file from a list of mirrors, checked against its published md5.

The bytes stream into a temporary file that is renamed into place only when the checksum
matches, so a partial or mismatching download never stays on disk under the final name; a
transfer longer than the file can be stops at the size it may have.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from pathlib import Path

from dnn.errors import DataError
from dnn.saving.fileio import atomic_write

TIMEOUT_SECONDS = 30
CHUNK_BYTES = 1 << 20


class ChecksumMismatch(Exception):
    pass


class TooLarge(Exception):
    """A mirror that sends, or announces, more than the file can hold."""


def _fetch(url: str, destination: Path, md5: str, max_bytes: int | None) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_write(destination) as file, \
            urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        length = response.headers.get("Content-Length", "")
        if max_bytes is not None and length.isdigit() and int(length) > max_bytes:
            raise TooLarge(f"it announces {int(length):,} bytes; the file has at most "
                           f"{max_bytes:,}")
        received = 0
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            received += len(chunk)
            if max_bytes is not None and received > max_bytes:
                raise TooLarge(f"it sent more than the file's {max_bytes:,} bytes at most")
            digest.update(chunk)
            file.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumMismatch(f"checksum mismatch (md5 {digest.hexdigest()}, "
                                   f"expected {md5})")


def download(urls: list[str], destination: Path, md5: str,
             max_bytes: int | None = None) -> list[str]:
    """Fetch the first of ``urls`` whose content has checksum ``md5`` into ``destination``,
    stopping a transfer at once when it announces or sends more than ``max_bytes``.

    Returns the failures met before success, one line each.  Raises DataError listing every
    failure when no mirror delivers the file.
    """
    failures = []
    for url in urls:
        try:
            _fetch(url, Path(destination), md5, max_bytes)
            return failures
        # URLError, HTTPError and timeouts are OSErrors; a cut transfer is an IncompleteRead.
        except (OSError, ValueError, http.client.HTTPException, ChecksumMismatch,
                TooLarge) as error:
            failures.append(f"{url}: {error}")
    raise DataError(f"could not download {Path(destination).name}: " + "; ".join(failures))
