"""Who is calling and which request this is, for every log line written while an RPC runs."""

from __future__ import annotations

import contextvars

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
caller_var: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")
