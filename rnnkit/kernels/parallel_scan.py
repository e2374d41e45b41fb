"""Parallel scan for recurrences linear in h (placeholder: no kernel yet)."""
from __future__ import annotations


def match(cell, x, p):
    return None
