"""Audit page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("audit")

from console import audit_view  # noqa: E402 - after the frame, which may stop the page

audit_view.render(ctx)
