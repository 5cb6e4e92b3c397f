"""Events page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("Events")

from console.views import events  # noqa: E402 - after the frame, which may stop the page

events.render(ctx)
