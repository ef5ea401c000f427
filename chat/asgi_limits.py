"""ASGI wrapper that bounds what a request may cost before Django sees it (placeholder:
passes everything through)."""
from __future__ import annotations

from typing import Any


def limit_requests(app: Any) -> Any:
    return app
