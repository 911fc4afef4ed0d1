"""``journey bench``: throughput, latency and memory of the worker on the local stack.

The bench measures, on one generated data set and one after another: a plain aiokafka
consumer (the upper bound of any Python consumer), a straightforward Faust agent (the
naive baseline), our worker end to end into the ClickHouse server, and ``journey replay``
into chdb and the server; then event-to-ClickHouse and event-to-Prometheus latency at a
steady paced rate, and the worker's memory per open session. Nothing here is imported by
the worker: the bench drives it as a subprocess, like an operator would.
"""
