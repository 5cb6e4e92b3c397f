"""Batches page of the operations console (the frame comes first: login, sidebar)."""
from console.frame import render_frame

ctx = render_frame("batches")

from console.views import batches  # noqa: E402 - after the frame, which may stop the page

batches.render(ctx)
