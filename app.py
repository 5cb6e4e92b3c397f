"""Operations console for the agent task queue: ``streamlit run app.py``.

This file has two roles. Run by ``streamlit run app.py``, it is first imported as a
module: Streamlit finds ``app``, an ``st.App`` that serves the console with its live
channel beside Streamlit's own routes (console/live_channel.py: open pages poll it for
their live panels, answered ahead of Streamlit's middleware). Each session then runs it
as a script, the Overview page. Every page, this one included, draws the shared frame
first (page config, login, connection, sidebar), so none can be reached around it.
"""
import streamlit as st

if __name__ == "__main__":          # a session's run of the Overview page
    from console.frame import render_frame

    ctx = render_frame("overview")

    from console.views import overview

    overview.render(ctx)
else:                               # imported by `streamlit run app.py` to serve the console
    from starlette.middleware import Middleware

    from console.live_channel import LiveChannelMiddleware

    app = st.App("app.py", middleware=[Middleware(LiveChannelMiddleware)])
