"""Shared test setup: jseg configures Jittor (offline, CPU) before anything imports it."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import jseg  # noqa: E402,F401  (must precede any jittor import)
