"""Tasks page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("tasks")

from console.views import tasks  # noqa: E402 - after the frame, which may stop the page

tasks.render(ctx)
