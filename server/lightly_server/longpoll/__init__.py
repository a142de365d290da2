"""The long polls of idle workers: what they answer, how they wait and what they cost.

* ``answers``: what the two polls answer (the queue poll and the shard work poll), shared by their
  routes and the fast path.
* ``asgi_fast_path``: a pure-ASGI middleware that answers the steady-state shape of both polls
  without FastAPI's request machinery.
* ``polling_workers``: the labels of the workers polling this process and their batched lease renewals.
* ``schedule_broker``: the wake-up index of the runs' long polls (PostgreSQL ``NOTIFY``, offers).
* ``shard_wakeup``: the wake-ups of the work poll when shards open.
"""
