"""Views of the preview part of the API."""

from __future__ import annotations

from flask import Blueprint


def register(blueprint: Blueprint) -> None:
    """Add this module's routes to ``blueprint``."""
