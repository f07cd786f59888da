"""The health supervisor: `llmctl supervise`, run by llmctl-supervisor.service.

systemd restarts a backend that crashes, after RestartSec=; nothing restarts one that hangs.
The supervisor probes every backend (startup, liveness, deep: the Kubernetes vocabulary;
a server that does not answer while its process works must show progress in its work
counters), restarts a hung one through systemd, restarts a crashed one at once when it is
the first failure of a run (a repeated one is left to RestartSec= and the start limit), and
refuses to make things worse: it leaves alone a unit that is
loading, stopped on purpose or being switched; it spaces its restarts with a capped
exponential backoff; after too many restarts
it opens a circuit breaker and waits for `llmctl reset NAME`; and it does not restart after
a failure a restart cannot fix (a missing model file, out of memory on load).

Modules: `plan` (settings, resolved), `engine` (the decisions, pure, with a fake clock in
tests: the round itself; `judge` says what a probe result means, `restarts` keeps backoff,
breaker and crash history, `tracker` what is known per backend, `reporter` turns decisions
into events, `actions` the requests the engine hands the runtime), `probes` (the generic part
of probing; what each kind answers is its adapter's, `llmctl.backends`), `exits` (a wait on
the main processes that wakes the loop when one exits), `store`
(supervisor.json: backoff, breaker, restart history), `events` (events.jsonl + the journal),
`metrics` (Prometheus), `runtime` (the loop, threads, sd_notify).

Files under $XDG_STATE_HOME/llmctl/: supervisor.json, events.jsonl, switch-history.jsonl
(written by `llmctl switch`, read for metrics).
"""

from __future__ import annotations

SUPERVISOR_NAME = "supervisor"
SUPERVISOR_UNIT = "llmctl-supervisor.service"
SUPERVISOR_KIND = "supervisor"
STATE_FILE = "supervisor.json"
EVENTS_FILE = "events.jsonl"
SWITCH_HISTORY_FILE = "switch-history.jsonl"
