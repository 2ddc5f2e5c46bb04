"""The one way a uAPI call fails: ``UapiError(errno, message)`` (architecture decision 3)."""

from __future__ import annotations

import errno as _errno
import os


class UapiError(Exception):
    """A uAPI call failed with a kernel errno; ``message`` says which rule fired."""

    def __init__(self, err: int, message: str = "") -> None:
        self.errno = err
        self.message = message
        name = _errno.errorcode.get(err, str(err))
        super().__init__(f"{name}: {message or os.strerror(err)}")


class VfiolabError(Exception):
    """A user-facing error outside the uAPI (bad input file, bad platform description)."""
