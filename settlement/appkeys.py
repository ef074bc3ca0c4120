"""Typed keys for objects stored on the aiohttp application."""

from __future__ import annotations

from typing import Any

from aiohttp import web

#: The `settlement.service.Service` of this process (typed loosely to avoid an import cycle).
SERVICE: web.AppKey[Any] = web.AppKey("settlement_service", object)
