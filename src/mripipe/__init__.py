"""mripipe: reproducible deep-learning pipeline for MRI."""

from __future__ import annotations

__version__ = "0.1.0"
