"""Limits page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("limits")

from console.views import limits  # noqa: E402 - after the frame, which may stop the page

limits.render(ctx)
