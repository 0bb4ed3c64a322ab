"""Storage backends behind one protocol (base.py): `local` (default) and `opensearch`."""

from __future__ import annotations

from ..config import Settings
from .base import StorageBackend


def make_backend(settings: Settings) -> StorageBackend:
    """The backend the settings choose; imported lazily so `local` needs no HTTP client.

    Raises ConfigError when `local` storage cannot live in `storage.data_dir` (local.py).
    """
    if settings.storage_backend == "opensearch":
        from .opensearch import OpenSearchBackend

        return OpenSearchBackend(settings.core, settings.storage)
    from .local import LocalBackend

    return LocalBackend(settings.storage.data_dir, retention_days=settings.storage.retention_days)
