"""Operations console for the agent task queue: ``streamlit run app.py``.

This entry script is the Overview page. Every page, this one included, draws the shared
frame first (page config, login, connection, sidebar), so none can be reached around it.
"""
from console.frame import render_frame

ctx = render_frame("overview")

from console.views import overview  # noqa: E402 - after the frame, which may stop the page

overview.render(ctx)
