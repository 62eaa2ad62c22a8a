"""Serve first, keep building: the build coordinator behind ``tiergate serve``.

    live = LiveBuild(config, board, config_path=path)
    menu = live.first_menu()      # every cached variant, and fp32 at least (built now if need be)
    runtime.deploy(config, menu=menu)
    live.start()                  # the rest, one Ray task each; the manifest grows as they land

Every variant the cache holds, measured, is on the first menu. What it does not hold is
built by Ray tasks, cheapest first (``tiergate.build.plan``). On a cold cache fp32 is
exported and its accuracy estimated on ``compress.live.quick_eval_samples`` test images,
so the gateway serves within a minute; its full measurement is the first task after.
Each task that lands rewrites the menu manifest, and every serving replica follows the
manifest (``tiergate.serving.upkeep.watch_menu``). A task that fails or is killed skips
its variant, with the reason on the board and in the manifest's ``skipped``.

The coordinator also follows the config file (a recipe changed, a variant added or
removed) and the board's ``rebuild`` commands (``POST /v1/admin/rebuild``).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from tiergate import settings
from tiergate.build.follow import Follower, needs_restart
from tiergate.build.menu import assemble_menu, candidate_of, load_inputs, menu_files
from tiergate.build.plan import build_order, to_build, waits_for
from tiergate.build.tasks import Job, absolute_paths, failure_reason, remove_stale_scratch, spec_named, submit
from tiergate.compression import Builder, CompressionError, parse_variants
from tiergate.compression.integrity import Sealer
from tiergate.compression.progress import progress
from tiergate.config import AppConfig, load_config
from tiergate.profiles import Measurement, MeasurementStore, Menu, measure_candidate, menu_entries
from tiergate.serving.board import BuildProgress, BuildState

log = logging.getLogger(__name__)


class LiveBuild:
    def __init__(
        self,
        config: AppConfig,
        board: Any | None,
        config_path: Path | None = None,
        overrides: dict[str, Any] | None = None,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``board``: the board actor (None: no progress, no commands); ``config_path`` and
        ``overrides``: where the config came from, followed while serving."""
        self.board, self.poll_s, self.clock = board, poll_s, clock
        self.config_path, self.overrides = config_path, overrides or {}
        self.key = settings.menu_key()
        self.config = absolute_paths(config)
        self.measured: dict[str, Measurement] = {}
        self.skipped: dict[str, str] = {}
        self.planned: dict[str, tuple] = {}  # each variant's recipe steps, as last applied
        self.queue: list[Job] = []
        self.running: dict[Any, Job] = {}  # task ref -> its job
        self._started: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._follower: Follower | None = None  # made with the first menu
        self._began = clock()
        self._complete = False
        self._bar: Any = None
        self.first: Menu | None = None  # the menu serving started with

    # -- the first menu ---------------------------------------------------------------------
    def first_menu(self) -> Menu:
        """The menu to start serving: every variant whose artifact and measurement are
        cached, and fp32 at least (exported and estimated now, on a cold cache)."""
        self.measured, self.skipped, self.planned, self.queue = {}, {}, {}, []  # a retry starts afresh
        self.config, self.splits = load_inputs(self.config)
        remove_stale_scratch(Path(self.config.compress.cache_dir) / "artifacts")
        self._follower = Follower(self.rebuild, self.board, self.config_path)
        sealer = Sealer(self.key)
        self.builder = Builder(self.config.model, self.splits, None, self.config.compress.cache_dir,
                               self.config.compress.finetune_samples, sealer)  # fmt: skip
        self.store = MeasurementStore(Path(self.config.compress.cache_dir) / "profiles", sealer)
        for spec in self._plan():
            self.planned[spec.name] = spec.steps
            if not self._from_cache(spec):
                self._enqueue(spec.name)
        if "fp32" not in self.measured:
            self._first_fp32()
        menu = self.first = self._write()
        log.info("serving %s first; %d variants to build", ", ".join(self.measured), len(self.queue))
        return menu

    def _plan(self) -> list:
        compress = self.config.compress
        return build_order(parse_variants(compress.variants, compress.recipes), compress.finetune_samples)

    def _from_cache(self, spec, samples: int | None = None) -> bool:
        artifact = self.builder.cached(spec.steps)
        if artifact is None:
            return False
        measured = measure_candidate(candidate_of(spec, artifact), self.splits, self.config.profile,
                                     self.store, samples=samples, cached_only=True)  # fmt: skip
        if measured is None:
            return False
        self.measured[spec.name] = measured
        self._report(BuildProgress(spec.name, BuildState.DONE, "cached", 100.0))
        return True

    def _first_fp32(self) -> None:
        """fp32 before anything serves: a quick estimate (cached, or one task now); its full
        measurement comes last, after every other variant has joined the menu (until then
        fidelities count on the images the estimate used)."""
        samples = self.config.compress.live.quick_eval_samples or None
        fp32 = next(spec for spec in self._plan() if spec.name == "fp32")
        if samples is None or not self._from_cache(fp32, samples):
            import ray

            job = self.queue.pop(0)
            quick = Job(job.config, "fp32", job.scratch, samples=samples)
            images = len(self.splits.test) if samples is None else min(samples, len(self.splits.test))
            log.info("fp32: exporting and measuring (accuracy on %d test images) before serving", images)
            try:
                self.measured["fp32"] = ray.get(self._submit(quick))
            except Exception as error:
                raise CompressionError(
                    f"fp32: cannot build or measure the base model: {failure_reason(error)}"
                ) from None
            finally:
                self.running.clear()
                shutil.rmtree(quick.scratch, ignore_errors=True)
            if self.measured["fp32"].samples is not None:  # an estimate: the full measurement later
                self.queue.insert(0, job)
        full = next((job for job in self.queue if job.variant == "fp32"), None)
        if full is not None:  # serving already: its full measurement refines what the others get first
            self.queue.remove(full)
            self.queue.append(full)
            self._report(BuildProgress("fp32", BuildState.QUEUED, "full measurement queued", 50.0))

    # -- the rest, in the background ---------------------------------------------------------
    def start(self) -> None:
        """Build the rest in a background thread, with a progress bar of the menu."""
        self._thread = threading.Thread(target=self._run, name="tiergate-live-build", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop building: the loop ends, running tasks are cancelled, their folders removed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self.running:
            import ray

            for ref, job in list(self.running.items()):
                ray.cancel(ref, force=True)
                shutil.rmtree(job.scratch, ignore_errors=True)

    def pending(self) -> list[str]:
        """Variants queued or building now."""
        return [job.variant for job in [*self.running.values(), *self.queue]]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except Exception:  # the coordinator outlives any one turn's trouble
                log.exception("live build: a turn failed; going on")
                self._stop.wait(self.poll_s)

    def _turn(self) -> None:
        import ray

        while len(self.running) < self._parallel() and (job := self._next_job()) is not None:
            self.queue.remove(job)
            self._submit(job)
        if self.running:
            done, _ = ray.wait(list(self.running), num_returns=1, timeout=self.poll_s)
            for ref in done:
                self._land(ref)
        else:
            self._stop.wait(self.poll_s)
        if self._follower is not None:
            self._follower.turn()
        self._show()
        if not self.running and not self.queue and not self._complete:
            self._complete = True
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            log.info("menu complete in %.0f s: %d serving, %d skipped%s", self.clock() - self._began,
                     len(self.measured), len(self.skipped),
                     f" ({', '.join(self.skipped)})" if self.skipped else "")  # fmt: skip

    def _show(self) -> None:
        """The menu's progress bar: variants on the menu, and what is building now."""
        if self._complete:
            return
        if self._bar is None:
            self._bar = progress(
                desc="menu", bar_format="{desc}: {n}/{total} variants |{bar}| {elapsed}{postfix}"
            )
        self._bar.total = len(self._wanted())
        self._bar.n = len([name for name in self.measured if name in self._wanted()])
        building = ", ".join(job.variant for job in self.running.values())
        self._bar.set_postfix_str(f"building {building}" if building else "", refresh=False)
        self._bar.refresh()

    def _parallel(self) -> int:
        live = self.config.compress.live
        if live.max_parallel is not None:
            return live.max_parallel
        import ray

        cpus = ray.cluster_resources().get("CPU", 1.0)
        return max(1, int((cpus - 1) // live.task_cpus))  # one CPU stays with the serving replicas

    def _next_job(self) -> Job | None:
        """The first queued job that builds on nothing still queued or building."""
        busy = set(self.pending())
        return next((job for job in self.queue if not waits_for(job.variant, busy - {job.variant})), None)

    def _submit(self, job: Job) -> Any:
        job = replace(job, config=self.config)  # the recipes as they are now, not as when queued
        ref = submit(job, self.board)
        self.running[ref] = job
        self._started[job.variant] = self.clock()
        self._report(BuildProgress(job.variant, BuildState.BUILDING, "starting", 0.0))
        return ref

    def _land(self, ref: Any) -> None:
        """A task ended: its variant joins the menu, or is skipped with the reason."""
        import ray

        job = self.running.pop(ref)
        took = self.clock() - self._started.pop(job.variant, self.clock())
        try:
            measured: Measurement | BaseException = ray.get(ref)
        except Exception as error:  # a build error, a killed worker, a cancelled task
            measured = error
        finally:
            shutil.rmtree(job.scratch, ignore_errors=True)  # what a killed build left, or the empty folder
        if job.variant not in self._wanted():
            self._forget(job.variant)  # removed from the config while it was building
            return
        if spec_named(job.config, job.variant).steps != self.planned.get(job.variant):
            self._enqueue(job.variant)  # its recipe changed while it was building
            return
        if isinstance(measured, BaseException):
            self._failed(job, failure_reason(measured), took)
            return
        self.measured[job.variant] = measured
        self.skipped.pop(job.variant, None)
        self._write()
        self._report(BuildProgress(job.variant, BuildState.DONE, "serving", 100.0))
        log.info("%s: built and measured in %.0f s; on the menu (%d of %d variants, %d to go)",
                 job.variant, took, len(self.measured), len(self._wanted()), len(self.pending()))  # fmt: skip

    def _failed(self, job: Job, reason: str, took: float) -> None:
        if job.variant in self.measured:  # a rebuild failed: the variant keeps its artifact
            log.error("%s: rebuild failed after %.0f s, the current one keeps serving: %s",
                      job.variant, took, reason)  # fmt: skip
            self._report(BuildProgress(job.variant, BuildState.DONE, "rebuild failed", 100.0, reason=reason))
            return
        self.skipped[job.variant] = reason
        self._write()
        self._report(BuildProgress(job.variant, BuildState.FAILED, "failed", reason=reason))
        log.error("variant %s skipped after %.0f s: %s", job.variant, took, reason)

    # -- changes while serving (tiergate.build.follow calls these) -----------------------------
    def rebuild(self, variant: str | None, force: bool) -> None:
        """``variant`` built again (``force``: even though the cache has it); None: the config
        file read again, its new or changed variants built and its removed ones retired."""
        if variant is not None:
            if variant in self._wanted() and variant not in self.pending():
                self.skipped.pop(variant, None)
                self._enqueue(variant, force=force)
                self._complete = False
            return
        try:
            config = absolute_paths(load_config(self.config_path, self.overrides))
        except Exception as error:  # a half-saved or invalid file: keep serving what we have
            log.error("config not applied, the current menu keeps serving: %s", error)
            return
        self._apply(config)

    def _apply(self, config: AppConfig) -> None:
        """Build what ``config`` adds or changes (recipe steps; every variant when the profile
        settings changed) and retire what it removes, cancelling its build if it has one;
        an unchanged variant that was skipped stays skipped (``rebuild(name)`` retries it)."""
        needs_restart(self.config, config)
        remeasure = config.profile != self.config.profile
        self.config = self.config.model_copy(update={"compress": config.compress, "profile": config.profile})
        wanted = set(self._wanted())
        for ref, job in list(self.running.items()):
            if job.variant not in wanted:
                import ray

                ray.cancel(ref, force=True)  # _land forgets it
        for job in [job for job in self.queue if job.variant not in wanted]:
            self.queue.remove(job)
            self._forget(job.variant)
        removed = [name for name in [*self.measured, *self.skipped] if name not in wanted]
        for name in removed:
            self.measured.pop(name, None), self.skipped.pop(name, None), self.planned.pop(name, None)
            self._forget(name)
        specs = self._plan()
        have = set(self.measured) | set(self.skipped)
        for name in to_build(specs, self.planned, have, set(self.pending()), remeasure):
            self.skipped.pop(name, None)
            self._enqueue(name)
        self.planned.update({spec.name: spec.steps for spec in specs})
        if removed:
            self._write()
            log.info("retired from the menu: %s", ", ".join(removed))
        self._complete = False

    # -- helpers -----------------------------------------------------------------------------
    def _wanted(self) -> list[str]:
        return list(self.config.compress.variants)

    def _enqueue(self, variant: str, force: bool = False) -> None:
        scratch = (
            Path(self.config.compress.cache_dir) / "artifacts" / f".build-{variant}-{uuid.uuid4().hex[:8]}"
        )
        self.queue.append(Job(self.config, variant, scratch, force=force))
        self._report(BuildProgress(variant, BuildState.QUEUED, "queued", 0.0))

    def _write(self) -> Menu:
        order = [name for name in self._wanted() if name in self.measured]
        order.sort(key=lambda name: name != "fp32")
        entries = menu_entries([self.measured[name] for name in order], self.splits, self.config.profile)
        menu = assemble_menu(self.config, self.splits, entries, dict(self.skipped), self.key)
        menu.write(menu_files(self.config).manifest)
        return menu

    def _report(self, progress: BuildProgress) -> None:
        if self.board is not None:
            self.board.report.remote(progress.to_json())

    def _forget(self, variant: str) -> None:
        if self.board is not None:
            self.board.forget.remote(variant)
