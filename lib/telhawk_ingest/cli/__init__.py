"""`telhawk-dlq`, the operator's command line for the DLQ (README, "The DLQ command line").

Modules: commands.py (the click commands), modes.py (the operator API or a DLQ folder, and the
exit codes), render.py (tables, JSON, progress bars).
"""

from .commands import cli, main

__all__ = ["cli", "main"]
