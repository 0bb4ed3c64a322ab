"""What a long-running worker does about CPython's garbage collector once it has started.

A worker's start-up builds tens of thousands of objects that live as long as the process: the
modules, the settings, the OCSF schema and its compiled validators, the service. CPython's full
(generation 2) collections traverse every tracked object each time they run, and under load one
ran every second or so, holding the event loop for about 50 ms each time: that was the p99 of
single-event requests (README, "The collector's full passes, and one worker per CPU").

`freeze_startup` moves what exists once start-up is over into the collector's permanent
generation (`gc.freeze`, Python ≥ 3.7), so a full pass looks only at objects made after it;
those are still collected as before. Frozen objects are never freed, which is what start-up
objects are for; a process that runs the handlers among its own objects (a test suite, a REPL)
sets `enabled` to False and keeps collecting everything.
"""

from __future__ import annotations

import gc

enabled = True


def freeze_startup() -> int:
    """Collect what start-up left as garbage, then freeze every object still tracked; the number
    of objects now frozen (`gc.get_freeze_count`). Nothing, and 0, when not `enabled`."""
    if not enabled:
        return 0
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
