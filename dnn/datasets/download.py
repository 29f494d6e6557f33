"""Downloading a file from a list of mirrors, checked against its published md5.

The bytes stream into a temporary file that is renamed into place only when the checksum
matches, so a partial or mismatching download never stays on disk under the final name.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from pathlib import Path

from dnn.errors import DataError
from dnn.fileio import atomic_write

TIMEOUT_SECONDS = 30
CHUNK_BYTES = 1 << 20


class ChecksumMismatch(Exception):
    pass


def _fetch(url: str, destination: Path, md5: str) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_write(destination) as file, \
            urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
        for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
            digest.update(chunk)
            file.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumMismatch(f"checksum mismatch (md5 {digest.hexdigest()}, "
                                   f"expected {md5})")


def download(urls: list[str], destination: Path, md5: str) -> list[str]:
    """Fetch the first of ``urls`` whose content has checksum ``md5`` into ``destination``.

    Returns the failures met before success, one line each.  Raises DataError listing every
    failure when no mirror delivers the file.
    """
    failures = []
    for url in urls:
        try:
            _fetch(url, Path(destination), md5)
            return failures
        # URLError, HTTPError and timeouts are OSErrors; a cut transfer is an IncompleteRead.
        except (OSError, ValueError, http.client.HTTPException, ChecksumMismatch) as error:
            failures.append(f"{url}: {error}")
    raise DataError(f"could not download {Path(destination).name}: " + "; ".join(failures))
