"""Events page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("events")

from console.views import events  # noqa: E402 - after the frame, which may stop the page

events.render(ctx)
