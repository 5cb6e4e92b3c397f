"""Workers page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("workers")

from console.views import workers  # noqa: E402 - after the frame, which may stop the page

workers.render(ctx)
