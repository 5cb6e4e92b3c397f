"""Submit page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("submit")

from console.views import submit  # noqa: E402 - after the frame, which may stop the page

submit.render(ctx)
