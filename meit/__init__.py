"""MEIT: ECG-to-report generation with LLMs (see README.md; the layout is in its "Layout" section)."""

import os

# OpenMP threads that spin while waiting make a shared CPU crawl (measured 10-15 s instead of 0.2-0.9 s for one
# training step of the default model with other jobs running). Set here, once, because every `python -m meit.X`
# imports this package before anything loads torch's OpenMP runtime; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
