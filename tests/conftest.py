"""Shared pytest setup: make ``tests/`` importable for helper modules such as ``lspci_oracle``."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
