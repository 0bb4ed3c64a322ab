"""The local emulator's settings overrides, shared by the emulator (local/emulator.py) and by
`telhawk-dlq --dlq-dir` on the emulator's own DLQ folder, so both use the same store.

The emulator of a checkout at `<root>` keeps its DLQ in `<root>/var/dlq` and its embedded store in
`<root>/var/data`, reads `<root>/local/config.yaml`, and uses `local` storage unless the caller's
environment names a backend or a storage URL (README "The local emulator"). Whatever the caller's
environment already sets is left alone.

Not here: starting the emulator, its routes or its banner (local/emulator.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# Environment names that already settle a setting the emulator would otherwise default; kept in
# step with telhawk_ingest.config.ENV_ALIASES (the first name is the one the emulator sets).
DLQ_PATH_VARS = ("INGEST_DLQ_BASE_PATH", "CORE_DLQ_BASE_PATH")
DATA_DIR_VARS = ("INGEST_STORAGE_DATA_DIR",)
CONFIG_VARS = ("INGEST_CONFIG_FILE",)
STORAGE_URL_VARS = ("INGEST_OPENSEARCH_URL", "INGEST_CORE_URL", "CORE_URL")
BACKEND_VARS = ("INGEST_STORAGE_BACKEND",)


def emulator_config(root: Path) -> Path:
    """The settings file the emulator of the checkout at `root` reads: `<root>/local/config.yaml`."""
    return root / "local" / "config.yaml"


def local_overrides(environ: Mapping[str, str], root: Path, config: Path | None = None) -> dict[str, str]:
    """Environment variables (name -> value) the emulator of the checkout at `root` sets, leaving
    out every setting `environ` already settles. `config` defaults to `emulator_config(root)`.

    The template's own environment points at /mnt (Lambda's EFS mount), so it is not applied;
    instead the DLQ and data live under `<root>/var`, settings come from local/config.yaml, and
    storage is the embedded `local` backend unless the caller named a backend or a storage URL
    (a URL alone then selects OpenSearch through the backend's `auto` default).
    """
    wanted: list[tuple[tuple[str, ...], str]] = [
        (DLQ_PATH_VARS, str(root / "var" / "dlq")),
        (DATA_DIR_VARS, str(root / "var" / "data")),
        (CONFIG_VARS, str(config or emulator_config(root))),
        ((*BACKEND_VARS, *STORAGE_URL_VARS), "local"),
    ]
    return {names[0]: value for names, value in wanted if not any(name in environ for name in names)}


def emulator_root(dlq_dir: Path) -> Path | None:
    """The checkout whose emulator keeps its DLQ in `dlq_dir`, or None: `<root>` when `dlq_dir`
    is `<root>/var/dlq` (symbolic links resolved) and `<root>/local/config.yaml` exists."""
    resolved = dlq_dir.resolve()
    root = resolved.parent.parent
    if resolved.name == "dlq" and resolved.parent.name == "var" and emulator_config(root).is_file():
        return root
    return None
