"""Benchmarks that print figures: `python -m bench [names]` (`make bench ARGS="dlq"`).

Every figure is measured, printed and compared with its target; nothing here passes or fails on
time. Load comes from a separate process (wrk when installed, else a Python keep-alive client) on
127.0.0.1 only, and every load loop is bounded both in requests and in seconds.
"""
