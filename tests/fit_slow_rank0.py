"""`python tests/fit_slow_rank0.py [meit.fit flags]`: `python -m meit.fit` with rank 0's run files written
`MEIT_TEST_RANK0_DELAY_S` seconds late, forcing the interleaving in which the other DDP ranks finish first
(Lightning relaunches this same script for rank 1; only rank 0 writes run files, so only rank 0 is slowed)."""

from __future__ import annotations

import os
import time
from typing import Any

import meit.fit as fit_module

_write_test_outputs = fit_module.write_test_outputs


def _late_write_test_outputs(*args: Any, **kwargs: Any) -> Any:
    time.sleep(float(os.environ.get("MEIT_TEST_RANK0_DELAY_S", "0")))
    return _write_test_outputs(*args, **kwargs)


fit_module.write_test_outputs = _late_write_test_outputs

if __name__ == "__main__":
    fit_module.main()
