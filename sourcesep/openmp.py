"""How long idle OpenMP threads spin, for the commands (``sourcesep``, ``sourcesep-daemon``).

torch's CPU kernels run on an OpenMP thread team. With GNU OpenMP's defaults a thread that runs
out of work spins for 300,000 iterations before it sleeps. Alone on a machine that saves a
wake-up; when several multi-threaded torch processes share the cores, each can spend its time
slices in the others' spins. On this project's 2-core machine, a 10 s pair at 2 threads (0.5 s
alone) beside another such job took a median of 7-14 s in runs made while other torch work was on
the machine, against 1.7 s with 10,000 spins; in clean runs the two are within noise. 10,000 spins
never measured slower alone, while sleeping at once (``OMP_WAIT_POLICY=PASSIVE``) costs 45 % alone
(``benchmarks/speed.py --sections busy``; README "Performance"). The commands set the shorter spin
unless the user chose a policy. A library does not change its caller's environment, so
``import sourcesep`` leaves it alone.
"""

from __future__ import annotations

import os
import sys
from typing import MutableMapping

SPIN_COUNT = "10000"


def limit_spin_waits(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` in ``environ`` unless ``GOMP_SPINCOUNT`` or
    ``OMP_WAIT_POLICY`` is set. OpenMP reads it once, when torch is first imported; returns False
    when torch was already imported (then it changes nothing in this process, only in the
    processes it starts)."""
    if "GOMP_SPINCOUNT" not in environ and "OMP_WAIT_POLICY" not in environ:
        environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return "torch" not in sys.modules
