"""Batches, in one place for callers: submitting them (engine/batch_submit.py), reading
them (engine/batch_reads.py), steering them (``TaskQueue.cancel_batch`` /
``retry_batch``) and CSV jobs (engine/csv_jobs.py).

A BATCH_QUERY task fans out into one AGENT_QUERY child per query; the children run in
parallel across workers and the last one to end finishes the batch. Its result lists every
child's answer in input order.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .batch_reads import (BATCH_FIELDS, batch_items, batch_progress, batch_summaries,
                          child_ids, child_item, child_records, child_statuses, child_window,
                          count_batches, count_children)
from .batch_submit import (MAX_BATCH_SIZE, SUBMIT_CHUNK, batch_queries, child_tasks, is_batch,
                           remove_staged, submit_batch, submit_family)
from .csv_jobs import export_results_csv, submit_csv

if TYPE_CHECKING:
    from .queue import TaskQueue

__all__ = ["BATCH_FIELDS", "MAX_BATCH_SIZE", "SUBMIT_CHUNK", "batch_items", "batch_progress",
           "batch_queries", "batch_summaries", "cancel_batch", "child_ids", "child_item",
           "child_records", "child_statuses", "child_tasks", "child_window", "count_batches",
           "count_children", "export_results_csv", "is_batch", "remove_staged", "retry_batch",
           "submit_batch", "submit_csv", "submit_family"]


def cancel_batch(queue: "TaskQueue", batch_id: str) -> int:
    """Cancel the batch's unfinished children; returns how many (``TaskQueue.cancel_batch``)."""
    return queue.cancel_batch(batch_id)


def retry_batch(queue: "TaskQueue", batch_id: str) -> int:
    """Run the batch's failed and cancelled children again; returns how many."""
    return queue.retry_batch(batch_id)
