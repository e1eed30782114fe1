"""The base layer every part of duoscan stands on: typed settings, Kafka and Redis clients, security, metrics,
overlays, the user-error type and the preflight checks. It imports nothing else of duoscan, so producers, workers
and the applications (CLI, demo, drill, view) can all import it without a cycle."""
