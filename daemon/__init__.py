"""sourcesep-daemon: a watch-folder service around :class:`sourcesep.Separator`.

Jobs dropped into an inbox are claimed exactly once (atomic rename into the work folder), run
through one preloaded model and committed atomically to the outbox (or to ``failed/`` with an
``error.json``). Modules, in the order a job meets them:

``config`` (validated settings) · ``inbox`` (discovery, settle, pairing, claim, adoption of jobs
left by a dead daemon) · ``admission`` (header checks before a job is admitted: limits,
truncated uploads) · ``validate`` (checks on a claimed job and its sidecar) · ``ledger``
(SQLite job states) · ``worker`` (one job attempt in a forked child or a thread; error
classification) · ``room`` (full disk, quota and file size limit detection) · ``outbox``
(atomic result folders, ``failed/``) · ``schedule`` (APScheduler: rescan, processing windows,
retention, heartbeat, nightly report) · ``report`` (the nightly HTML summary) · ``service``
(the process: main loop, signals, starting attempts, reload), assembled from ``intake``
(scans, claims, adoption), ``outcomes`` (commit, retry, fail) and ``status`` (status.json,
watchdog) · ``job`` (a claimed job) · ``notify`` (sd_notify) · ``logs`` (structlog setup,
per-job ``job.log.jsonl``) · ``cli`` (``sourcesep-daemon``).
"""

__version__ = "0.1.0"
