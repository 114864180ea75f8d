"""slm-nas: hardware-aware architecture and compression search for small language models."""

from __future__ import annotations

__version__ = "0.1.0"
