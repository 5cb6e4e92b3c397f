"""A page's filters, page number and open item kept in the URL (``st.query_params``).

One mechanism for every page that has them (Tasks, Failed tasks, Events, Batches,
Schedules, Audit): a link such as ``/Tasks?status=failed&type=agent_query&range=Last+hour``
can be shared, Back and Forward step through the views, and the last view comes back when
the operator returns to the page by the sidebar (a link with no parameters).

A page describes its parameters once (:class:`UrlParam`), calls :meth:`UrlState.restore`
before it draws its widgets and :meth:`UrlState.publish` after its state is settled (at
the end of its live part: a fragment can write the URL too).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import streamlit as st

MAX_TEXT = 500        # characters kept of one value from a URL
MAX_ITEMS = 50        # values kept of a repeated parameter


@dataclass(frozen=True)
class UrlParam:
    """One URL parameter bound to one ``st.session_state`` key.

    ``kind``: ``"text"`` (a string, surrounding spaces dropped), ``"int"``, ``"page"`` (an
    int shown from 1 in the URL, kept from 0 in the state) or ``"list"`` (a repeated
    parameter, ``?types=a&types=b``, for a multiselect). A value not among ``choices`` (when
    given) reads as ``default``; the default itself is left out of the URL.
    """

    name: str
    key: str
    default: Any = ""
    kind: str = "text"
    choices: tuple = ()

    def read(self, raw: Any) -> Any:
        """The state value for ``raw`` from the URL (a string, or a list for "list")."""
        if raw is None:
            return list(self.default) if self.kind == "list" else self.default
        if self.kind == "list":
            values = [str(v).strip()[:MAX_TEXT] for v in raw][:MAX_ITEMS]
            return [v for v in values if v and (not self.choices or v in self.choices)]
        if self.kind in ("int", "page"):
            try:
                value = int(str(raw)) - (1 if self.kind == "page" else 0)
            except ValueError:
                return self.default
            if self.kind == "page":
                return max(0, value)
        else:
            value = str(raw).strip()[:MAX_TEXT]
        return value if not self.choices or value in self.choices else self.default

    def write(self, value: Any) -> Any:
        """The URL value for the state ``value``, or None to leave the parameter out."""
        if self.kind == "list":
            values = [str(v) for v in value or () if str(v).strip()]
            return values or None
        if value is None or value == self.default:
            return None
        if self.kind == "page":
            return str(int(value) + 1)
        text = str(value).strip()
        return text or None


class UrlState:
    """The URL parameters of one page (see the module's docstring).

    ``markers``: keys of widgets the page draws on every run. Streamlit forgets a page's
    widgets when another page runs, so their absence tells "came back from another page"
    (restore the last view) from "Back to this page's own earlier URL" (follow the URL).
    ``on_apply`` runs after the URL set the state (say, to clear a table's selection,
    which would point at other rows now).
    """

    def __init__(self, page_key: str, params: Sequence[UrlParam], markers: Sequence[str],
                 on_apply: Callable[[], None] | None = None):
        self.saved_key = f"{page_key}__url"
        self.params = tuple(params)
        self.markers = tuple(markers)
        self.on_apply = on_apply

    def current(self) -> dict[str, Any]:
        """This page's parameters in the URL now (repeated ones as lists)."""
        found: dict[str, Any] = {}
        for param in self.params:
            if param.name in st.query_params:
                found[param.name] = (st.query_params.get_all(param.name) if param.kind == "list"
                                     else st.query_params[param.name])
        return found

    def apply(self, params: dict[str, Any]) -> None:
        """Set the state from URL parameters: absent ones take their default."""
        for param in self.params:
            st.session_state[param.key] = param.read(params.get(param.name))
        if self.on_apply is not None:
            self.on_apply()

    def restore(self) -> None:
        """At the start of a page run: a link, Back or Forward (a URL this page did not
        write last) sets the state; a return by the sidebar (no parameters, the page's
        widgets forgotten) brings back the last view; otherwise the state stands."""
        params, saved = self.current(), st.session_state.get(self.saved_key)
        returning = not all(key in st.session_state for key in self.markers)
        if params == saved:
            if returning:
                self.apply(params)
        elif not params and saved and returning:
            self.apply(saved)
        else:
            self.apply(params)

    def publish(self) -> None:
        """Put the state in the URL (defaults left out), and remember it as the last view."""
        params: dict[str, Any] = {}
        for param in self.params:
            value = param.write(st.session_state.get(param.key, param.default))
            if value is not None:
                params[param.name] = value
        st.session_state[self.saved_key] = params
        if self.current() != params:
            st.query_params.from_dict(params)
