"""Which model each backend has loaded, who waits for which, and when a swap happens.

The policy, in the order it is applied (docs/on-demand.md says the same for users):

* A request for a model that is loaded is admitted at once, unless a request for another model
  of the same backend is already waiting: then it queues behind it (no starvation of the
  waiting model by a steady stream for the loaded one).
* A request for a model that is not loaded queues, and the backend's worker swaps models in
  the order requests arrived: it stops admitting the loaded model, waits until that model's
  requests in flight (streams included) have finished (at most `drain_timeout`), waits out
  the loaded model's `min_residency`, then loads the new one and admits everything queued for
  it before it looks at the next model. A client alternating two models one request at a time
  is answered after one load each.
* A pinned model is never evicted: a request that would need it gone fails with the reason.
* A load that fails (does not fit, does not start, breaker open) fails the requests waiting
  for it with the reason, and for `FAILURE_HOLD` seconds later requests fail at once with the
  same reason (LiteLLM retries and then tries the model's fallbacks; a retry must not start
  another load that will fail the same way).
* `idle_unload`: a loaded model nobody used for that long (only requests through the router
  count; health probes and metrics scrapes go to the backends directly) is unloaded.

A backend that serves many models itself (Ollama) admits every request: it loads on demand
on its own. Everything that starts or stops a server is behind `Loader` (llmctl.router.loader
is the real one), so this module is plain asyncio and is tested with a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

FAILURE_HOLD = 10.0  # seconds a failed load answers for later requests of the same model
IDLE_TICK = 1.0
STOPPING = "llmctl's router is stopping (llmctl down, or a restart for a changed config)"


class Unavailable(Exception):
    """The model cannot be served now; the message says why (it reaches the client)."""


@dataclass(frozen=True)
class ModelPolicy:
    model_id: str
    backend: str
    pinned: bool = False
    idle_unload: float | None = None  # seconds
    min_residency: float = 0.0
    load_timeout: float = 300.0


@dataclass(frozen=True)
class LoadOutcome:
    loaded: str | None  # what the backend serves after the attempt
    seconds: float
    evicted: tuple[str, ...] = ()  # other backends stopped to make room
    unchanged: bool = False  # it was loaded already (an explicit switch to what serves)


class LoadFailed(Exception):
    def __init__(self, reason: str, loaded: str | None) -> None:
        super().__init__(reason)
        self.loaded = loaded  # what serves after the failure (the old model, or nothing)


class Loader(Protocol):
    """Starts and stops the servers; every method may take seconds."""

    async def victims(self, backend: str, model: str) -> list[str]:
        """Other backends that must stop for `model` to fit; raises Unavailable if it cannot."""

    async def load(
        self, backend: str, model: str, *, evict: Sequence[str], restore: str | None
    ) -> LoadOutcome:
        """Stop `evict` and the backend's current server, start `model`; on failure raise
        LoadFailed (with `restore` given: bring that model back first)."""

    async def unload(self, backend: str) -> None: ...


@dataclass
class Event:
    kind: str  # load | load-failed | evict | idle-unload | drain-timeout
    backend: str
    model: str | None
    detail: str
    seconds: float | None = None


@dataclass
class _Waiter:
    model: str
    future: asyncio.Future[LoadOutcome | None]
    explicit: bool = False  # `llmctl switch`: roll back on failure, resolve with the outcome
    since: float = 0.0


@dataclass
class Slot:
    """One backend: what it has loaded and who is waiting."""

    name: str
    serves_many: bool
    loaded: str | None = None
    loaded_at: float = 0.0
    draining: bool = False
    in_flight: Counter[str] = field(default_factory=Counter)
    last_use: dict[str, float] = field(default_factory=dict)
    waiters: list[_Waiter] = field(default_factory=list)
    idle: asyncio.Event = field(default_factory=asyncio.Event)  # set when in_flight drops
    worker: asyncio.Task[None] | None = None
    loads: int = 0

    def admitting(self, model: str) -> bool:
        if self.serves_many:
            return True
        return self.loaded == model and not self.draining and not any(w.model != model for w in self.waiters)


@dataclass
class Lease:
    """One admitted request: `release()` when its response has been relayed."""

    scheduler: Scheduler
    slot: Slot
    model: str

    def release(self) -> None:
        self.scheduler.release(self)


class Scheduler:
    def __init__(
        self,
        policies: dict[str, ModelPolicy],
        serves_many: set[str],
        loader: Loader,
        *,
        drain_timeout: float = 120.0,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.policies = policies
        self.loader = loader
        self.drain_timeout = drain_timeout
        self.clock = clock
        self.on_event = on_event or (lambda _e: None)
        backends = {p.backend for p in policies.values()}
        self.slots = {b: Slot(b, serves_many=b in serves_many) for b in sorted(backends)}
        self.failures: dict[str, tuple[float, str]] = {}
        self.changing = asyncio.Lock()  # one load or unload at a time, machine-wide (memory)
        self.stopping = False  # SIGTERM came: a stop, or a restart for a new config
        self.closed = False  # the drain is over: nothing is admitted any more

    # --- requests ----------------------------------------------------------------------------

    def set_loaded(self, backend: str, model: str | None) -> None:
        """What a backend serves when the router starts (probed by the caller)."""
        slot = self.slots[backend]
        slot.loaded, slot.loaded_at = model, self.clock()

    def observe(self, backend: str, model: str | None, running: bool) -> bool:
        """Another command changed the backend (its unit file now serves `model`): believe it,
        unless a load of ours is under way (then the file is ours). Returns whether it changed."""
        slot = self.slots.get(backend)
        if slot is None or slot.serves_many or self.changing.locked():
            return False
        now = model if running else None
        if slot.loaded == now:
            return False
        slot.loaded, slot.loaded_at = now, self.clock()
        self.on_event(Event("observed", backend, now, "changed by another command (its unit file)"))
        return True

    def backend_of(self, model: str) -> str | None:
        policy = self.policies.get(model)
        return policy.backend if policy is not None else None

    async def admit(self, model: str) -> Lease:
        policy = self._policy(model)
        slot = self.slots[policy.backend]
        if self.closed:
            raise Unavailable(STOPPING)
        if slot.admitting(model):
            # Also while stopping: the backend runs until the router has gone (it is ordered
            # after them), and at a restart the request would otherwise fail for nothing.
            return self._lease(slot, model)
        if self.stopping:
            raise Unavailable(STOPPING)
        held = self.failures.get(model)
        if held is not None and self.clock() - held[0] < FAILURE_HOLD:
            raise Unavailable(held[1])
        waiter = self._wait(slot, model)
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), policy.load_timeout)
        except TimeoutError:
            waiter.future.cancel()
            with contextlib.suppress(ValueError):
                slot.waiters.remove(waiter)
            raise Unavailable(
                f"{model} did not load within its load_timeout of {policy.load_timeout:g} s"
            ) from None
        # The worker counted this request in flight when it admitted it.
        return Lease(self, slot, model)

    async def switch(self, model: str) -> LoadOutcome:
        """`llmctl switch`: load `model` now, through the same queue; roll back on failure."""
        slot = self.slots[self._policy(model).backend]
        waiter = self._wait(slot, model, explicit=True)
        outcome = await waiter.future
        assert outcome is not None
        return outcome

    def release(self, lease: Lease) -> None:
        slot = lease.slot
        slot.in_flight[lease.model] -= 1
        if slot.in_flight[lease.model] <= 0:
            del slot.in_flight[lease.model]
        slot.last_use[lease.model] = self.clock()
        slot.idle.set()

    def _lease(self, slot: Slot, model: str) -> Lease:
        slot.in_flight[model] += 1
        slot.last_use[model] = self.clock()
        return Lease(self, slot, model)

    def _policy(self, model: str) -> ModelPolicy:
        policy = self.policies.get(model)
        if policy is None:
            raise Unavailable(f"{model} is not a local model in llmctl's applied config")
        return policy

    def _wait(self, slot: Slot, model: str, *, explicit: bool = False) -> _Waiter:
        future: asyncio.Future[LoadOutcome | None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(model, future, explicit, self.clock())
        slot.waiters.append(waiter)
        if slot.worker is None or slot.worker.done():
            slot.worker = asyncio.create_task(self._work(slot), name=f"router-{slot.name}")
        return waiter

    # --- the per-backend worker -----------------------------------------------------------

    async def _work(self, slot: Slot) -> None:
        while True:
            slot.waiters = [w for w in slot.waiters if not w.future.done()]
            if not slot.waiters:
                return
            target = slot.waiters[0].model
            if slot.loaded == target:
                if slot.draining:  # another backend's load is making room here: wait for it
                    async with self.changing:
                        pass
                    continue
                self._admit_waiting(slot, target, LoadOutcome(target, 0.0, unchanged=True))
                continue
            explicit = any(w.model == target and w.explicit for w in slot.waiters)
            try:
                outcome = await self._swap(slot, target, explicit=explicit)
            except (Unavailable, LoadFailed) as failure:
                self._fail_waiting(slot, target, str(failure))
                continue
            finally:
                slot.draining = False
            self._admit_waiting(slot, target, outcome)

    async def _swap(self, slot: Slot, target: str, *, explicit: bool) -> LoadOutcome:
        old = slot.loaded
        if old is not None and old != target and self._policy(old).pinned:
            raise Unavailable(f"loading {target} would evict {old}, which is pinned")
        async with self.changing:
            victims = await self.loader.victims(slot.name, target)
            for victim in victims:
                held = self.slots.get(victim)
                if held is not None and held.loaded is not None and self._policy(held.loaded).pinned:
                    raise Unavailable(
                        f"loading {target} would evict {held.loaded} ({victim}), which is pinned"
                    )
            slot.draining = True
            for other in [slot, *(self.slots[v] for v in victims if v in self.slots)]:
                other.draining = True
                await self._drain(other)
                await self._residency(other)
            try:
                outcome = await self.loader.load(
                    slot.name, target, evict=victims, restore=old if explicit else None
                )
            except LoadFailed as failure:
                slot.loaded, slot.loaded_at = failure.loaded, self.clock()
                self._forget_victims(victims, "switch" if explicit else "demand")
                self.failures[target] = (self.clock(), str(failure))
                self.on_event(Event("load-failed", slot.name, target, str(failure)))
                raise
            finally:
                for v in victims:
                    if v in self.slots:
                        self.slots[v].draining = False
            # Every backend the plan named was stopped, unloaded or put to sleep: none serves now.
            self._forget_victims(sorted({*victims, *outcome.evicted}), "switch" if explicit else "demand")
            slot.loaded, slot.loaded_at, slot.loads = outcome.loaded, self.clock(), slot.loads + 1
            self.failures.pop(target, None)
            if old is not None and old != target:
                why = "switch: llmctl switch" if explicit else "demand: a request"
                self.on_event(Event("evict", slot.name, old, f"{why} asked for {target}"))
            self.on_event(
                Event("load", slot.name, target, "switch" if explicit else "demand", outcome.seconds)
            )
            return outcome

    def _forget_victims(self, victims: Sequence[str], reason: str) -> None:
        for victim in victims:
            held = self.slots.get(victim)
            if held is not None and held.loaded is not None:
                self.on_event(Event("evict", victim, held.loaded, f"{reason}: memory for another backend"))
                held.loaded = None

    async def _drain(self, slot: Slot, deadline: float | None = None) -> None:
        """Wait until the slot's requests in flight have finished, at most drain_timeout."""
        deadline = self.clock() + self.drain_timeout if deadline is None else deadline
        while sum(slot.in_flight.values()) > 0:
            left = deadline - self.clock()
            if left <= 0:
                self.on_event(
                    Event("drain-timeout", slot.name, slot.loaded, f"{sum(slot.in_flight.values())} "
                          f"request(s) still in flight after {self.drain_timeout:g} s: cut")
                )  # fmt: skip
                return
            slot.idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(slot.idle.wait(), left)

    async def _residency(self, slot: Slot) -> None:
        if slot.loaded is None:
            return
        left = slot.loaded_at + self._policy(slot.loaded).min_residency - self.clock()
        if left > 0:
            await asyncio.sleep(left)

    def _admit_waiting(self, slot: Slot, model: str, outcome: LoadOutcome) -> None:
        for waiter in [w for w in slot.waiters if w.model == model]:
            slot.waiters.remove(waiter)
            if waiter.future.done():
                continue
            if not waiter.explicit:
                slot.in_flight[model] += 1  # counted before anyone can drain it
                slot.last_use[model] = self.clock()
            waiter.future.set_result(outcome)

    def _fail_waiting(self, slot: Slot, model: str, reason: str) -> None:
        for waiter in [w for w in slot.waiters if w.model == model]:
            slot.waiters.remove(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(Unavailable(reason))

    # --- idle unload and shutdown -------------------------------------------------------------

    async def unload_idle(self) -> list[str]:
        """One pass: unload every model idle past its idle_unload. Returns the backends."""
        done = []
        for slot in self.slots.values():
            model = slot.loaded
            if slot.serves_many or model is None or slot.waiters or slot.in_flight.get(model):
                continue
            policy = self._policy(model)
            if policy.pinned or policy.idle_unload is None:
                continue
            now = self.clock()
            idle_for = now - max(slot.last_use.get(model, slot.loaded_at), slot.loaded_at)
            if idle_for < policy.idle_unload or now - slot.loaded_at < policy.min_residency:
                continue
            async with self.changing:
                if slot.loaded != model or slot.waiters or slot.in_flight.get(model):
                    continue  # someone asked for it meanwhile
                slot.draining = True
                try:
                    await self.loader.unload(slot.name)
                except Exception as exc:  # stopped or not: send it no requests
                    self.on_event(Event("idle-unload-failed", slot.name, model, str(exc)))
                    continue
                finally:
                    slot.draining = False
                    slot.loaded = None  # the next request loads it again (a load checks memory)
                self.on_event(Event("idle-unload", slot.name, model, f"idle for {idle_for:.0f} s"))
                done.append(slot.name)
        return done

    async def run_idle_unloads(self) -> None:
        while not self.stopping:
            await asyncio.sleep(IDLE_TICK)
            try:
                await self.unload_idle()
            except Exception as exc:
                self.on_event(Event("idle-unload-failed", "-", None, str(exc)))

    async def drain_all(self) -> None:
        """On SIGTERM (llmctl down, or a restart): let requests in flight finish, fail the ones
        waiting for a load. Requests for loaded models are still admitted while the drain runs
        (the server answers each with `Connection: close`, so clients come back on new
        connections, which the socket unit holds for the next start)."""
        self.stopping = True
        for slot in self.slots.values():
            self._fail_queued(slot)
        deadline = self.clock() + self.drain_timeout
        await asyncio.gather(*(self._drain(slot, deadline) for slot in self.slots.values()))
        self.closed = True
        if self.clock() < deadline:  # what was admitted while the first wait ran, same bound
            await asyncio.gather(*(self._drain(slot, deadline) for slot in self.slots.values()))

    def _fail_queued(self, slot: Slot) -> None:
        for waiter in slot.waiters:
            if not waiter.future.done():
                waiter.future.set_exception(Unavailable(STOPPING))
        slot.waiters.clear()

    def snapshot(self) -> dict[str, object]:
        """What `llmctl status` shows per backend: loaded, available, queue, last use."""
        now = self.clock()
        out: dict[str, object] = {}
        for slot in self.slots.values():
            models = sorted(m for m, p in self.policies.items() if p.backend == slot.name)
            out[slot.name] = {
                "loaded": slot.loaded,
                "serves_many": slot.serves_many,
                "available": models,
                "draining": slot.draining,
                "queue": len(slot.waiters),
                "in_flight": dict(slot.in_flight),
                "idle_s": {m: round(now - t, 1) for m, t in sorted(slot.last_use.items())},
                "loads": slot.loads,
            }
        return out
