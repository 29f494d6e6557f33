"""The logs of a training batch, read from the device only when a callback looks at them."""

from __future__ import annotations

from collections.abc import Mapping


class BatchLogs(Mapping):
    """A batch's logs: ``read()`` (the device's running means) called on first look only, so
    a callback that ignores them costs no synchronisation."""

    def __init__(self, read):
        self._read, self._values = read, None

    def _loaded(self) -> dict:
        if self._values is None:
            self._values = self._read()
        return self._values

    def __getitem__(self, key):
        return self._loaded()[key]

    def __iter__(self):
        return iter(self._loaded())

    def __len__(self):
        return len(self._loaded())
