"""Runs: a sync request becomes a Run record and queue messages; each message runs one slice.

    dispatch  -> claims the integration, records the run, enqueues its first slice
    slices    -> one slice under the integration's lease: each unfinished data type's pass
                 until the slice budget, then progress saved and the continuation enqueued
    finish    -> logs, status, stats and webhook once every type is done or the run failed
    schedule  -> the index of next-run times the timer reads (proportional to what is due)
"""
