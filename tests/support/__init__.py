"""Helpers shared by the engine's behaviour tests (index checks, handlers, worker processes)."""
