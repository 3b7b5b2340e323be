"""A demo provider: a small OpenAI-compatible model server for development, demos, tests and benchmarks.

It is not part of the platform's path — the gateway calls it as it would call any provider's upstream. Replies are
made by a deterministic generator (no weights, no GPU) with correct `usage` counts by its own tokenizer, and latency
knobs (time to first token, tokens per second) that make streams look and time like a real model's.
`python manage.py serve_demo_model` runs it; `make run` starts it on port 8001, where the demo model services point.
"""
