"""Failed tasks page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("failed")

from console.views import failed  # noqa: E402 - after the frame, which may stop the page

failed.render(ctx)
