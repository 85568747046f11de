"""The commands shorten OpenMP's idle spinning before torch starts, unless the user chose a wait
policy; importing the library changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from sourcesep.openmp import SPIN_COUNT, limit_spin_waits


def test_short_spins_unless_the_user_chose():
    env: dict[str, str] = {}
    limit_spin_waits(env)
    assert env == {"GOMP_SPINCOUNT": SPIN_COUNT}
    for chosen in ({"GOMP_SPINCOUNT": "300000"}, {"OMP_WAIT_POLICY": "PASSIVE"}):
        env = dict(chosen)
        limit_spin_waits(env)
        assert env == chosen


def _child(code: str, **chosen: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**env, **chosen}, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


def test_the_commands_set_it_before_torch_starts_and_the_library_does_not():
    # The command modules load without torch, so their main() runs before torch's OpenMP starts.
    assert _child("import sys, sourcesep, sourcesep.cli, daemon.cli; print('torch' in sys.modules)") == "False"
    code = "import os, sourcesep.cli as c; c.main(['params']); import torch; print(os.environ.get('GOMP_SPINCOUNT'))"
    assert _child(code) == SPIN_COUNT
    assert _child(code, GOMP_SPINCOUNT="5") == "5"
    # The library alone leaves the caller's environment as it is.
    assert _child("import os, sourcesep; from sourcesep import Separator; print(os.environ.get('GOMP_SPINCOUNT'))") == "None"


def test_the_package_lists_and_gives_its_api_without_importing_torch_first():
    code = ("import sys, sourcesep; d = dir(sourcesep); before = 'torch' in sys.modules; "
            "from sourcesep import Separator, Result; print(before, 'Separator' in d and 'Result' in d, "
            "Separator.__module__, 'torch' in sys.modules)")
    assert _child(code) == "False True sourcesep.separator True"
