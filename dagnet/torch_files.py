"""Reading a file ``torch.save`` wrote without running anything in it.

``torch.load(weights_only=True)`` refuses pickled objects, but a file can fail
to be a torch file in a dozen ways, each with its own exception type. Data
files and checkpoints both need them sorted into two answers their callers
can word for the user: the file holds Python objects, or it is no (complete)
torch file.
"""

from __future__ import annotations

import errno
import pickle
import warnings
import zipfile
from pathlib import Path


class HoldsObjects(ValueError):
    """The file holds pickled Python objects, which weights_only=True refused; nothing ran."""


class NotATorchFile(ValueError):
    """The file is cut short, or no file torch.save wrote."""


def load_weights_only(path: Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; failures of the file itself are the two errors above.

    Errors of the file system (EIO, EACCES, ...) pass through as they are; a cut-short
    file that makes torch's reader fail with EINVAL is a NotATorchFile.
    """
    import torch
    with warnings.catch_warnings():      # "pickle protocol 4 ..." from files torch.save did not write
        warnings.simplefilter("ignore", UserWarning)
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            raise HoldsObjects(str(path)) from None
        except (EOFError, RuntimeError, ValueError, LookupError, TypeError, AttributeError, zipfile.BadZipFile,
                OSError) as error:
            if isinstance(error, OSError) and error.errno not in (None, errno.EINVAL):
                raise
            raise NotATorchFile(str(path)) from None
