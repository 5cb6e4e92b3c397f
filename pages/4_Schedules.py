"""Schedules page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("schedules")

from console.views import schedules  # noqa: E402 - after the frame, which may stop the page

schedules.render(ctx)
