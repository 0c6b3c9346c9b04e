"""`fit`: the training loop, with exact resume, a graceful Ctrl-C, divergence checks and data parallelism.

Exact resume rests on three choices: the data order of an epoch is a permutation
seeded by (seed, epoch), so it can be recomputed and entered mid-way; augmentation
is seeded per example (see dagnet.data.Augmented); and every generator state
(torch, CUDA, numpy, python) of every process is stored in the checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import random
import shutil
import signal
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dagnet.data import collate
from dagnet.data.sequences import bucket_lengths, bucketed
from dagnet.train.checkpoint import CheckpointWriter, rng_state, set_rng_state
from dagnet.train.config import ConfigError, TrainConfig
from dagnet.train.distributed import all_gather, all_reduce_sum, world
from dagnet.train.evaluate import check_inputs, forward, model_inputs, resolve_device, run_evaluation, to_device
from dagnet.train.examples import as_fit_data, field_names
from dagnet.train.loggers import CsvLogger, Logger, logger_factories
from dagnet.train.metrics import Task
from dagnet.train.objective import Objective
from dagnet.train.optim import EarlyStopping, Schedule, build_optimizer
from dagnet.train.run import Progress, RunDir, RunDirError, format_record
from dagnet.train.threads import auto_threads, step_flops, using_threads
from dagnet.train.sharding import gathered, restore_weights, save_shards, shard_by_block, shards_of

# Settings a resumed run may change without a warning.
RESUMABLE_CHANGES = {"epochs", "device", "num_workers", "compile", "early_stopping", "threads", "loggers",
                     "keep_best"}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


def fit(
    model: nn.Module,
    objective: Objective,
    train_set: Dataset | DataLoader,
    val_set: Dataset | DataLoader | None,
    config: TrainConfig | dict,
    run_dir,
    metrics: Task | None = None,
    *,
    resume: bool = False,
    collate_fn: Callable = collate,
    data_stats: dict | None = None,
    data_state: dict | None = None,
    progress: bool = True,
    run_files: dict[str, bytes] | None = None,
    loggers: list[Logger] = (),
) -> dict:
    """Train `model` (called as model(**inputs), returning a dict of outputs or the one tensor the
    losses read) to minimise `objective`.

    The data are map-style datasets or DataLoaders of dict or tuple examples (see
    dagnet.train.examples for how tuple fields are named; a DataLoader gives its batch
    size and workers, fit its own seeded order). Each epoch appends a line to
    run_dir/metrics.jsonl and metrics.csv, reports to `loggers` and those the config
    names (TensorBoard by default), and rewrites last.pt (and best.pt when
    `config.early_stopping.metric` improves); `metrics` picks the task
    metrics computed on `val_set`. With resume=True the run continues from last.pt
    exactly as if it had not stopped. batch_size is the global batch: inside a
    process group each process takes an equal share. Returns the summary, also
    written to run_dir/summary.json. Raises KeyboardInterrupt after saving on
    Ctrl-C, TrainingDiverged on a non-finite loss, and RunDirError when a write fails
    (a full disk): what was saved before stays loadable. `run_files` (name: bytes, e.g.
    the spec) are written into run_dir when the run starts, after every check passed.
    `data_state` (the loader's preprocessing: class names, vocabularies) is saved in every
    checkpoint, for eval and predict to read new data the same way.
    """
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    names = field_names(model_inputs(model), objective.batch_keys)
    train_set, chosen = as_fit_data(train_set, names)
    val_set, _ = as_fit_data(val_set, names)
    collate_fn = chosen.pop("collate_fn", collate_fn)
    config = dataclasses.replace(config, **chosen) if chosen else config
    with _determinism(config.deterministic):
        trainer = Trainer(
            model, objective, train_set, val_set, config, run_dir, metrics, collate_fn, progress, data_stats or {},
            data_state or {},
        )
        with using_threads(trainer.threads):
            return trainer.run(resume, run_files, list(loggers))


def seed_everything(seed: int) -> None:
    """Seed torch (all devices), numpy and python's random."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def _determinism(enabled: bool):
    """Deterministic kernels for the duration of the run only (the setting is process-global)."""
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


class ResumableSampler(DistributedSampler):
    """DistributedSampler (an order seeded by seed + epoch, dealt out to the processes) that can start mid-epoch.

    Given `lengths` (data with `bucket: true`), each batch of the order holds examples of
    similar length (dagnet.data.sequences.bucketed), still a function of seed and epoch.
    """

    start = 0
    lengths: list[int] | None = None
    batch_size = 1

    def epoch_order(self) -> list[int]:
        order = list(super().__iter__())
        if self.lengths is None:
            return order
        return bucketed(order, self.lengths, self.batch_size, seed=self.seed + self.epoch)

    def __iter__(self):
        return iter(self.epoch_order()[self.start :])

    def __len__(self) -> int:
        return self.num_samples - self.start


def _ignore_sigint(worker_id: int) -> None:
    """Data workers leave Ctrl-C to the main process, which stops at the next step boundary."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Trainer:
    """The state of one run and the steps that advance it; `fit` is the way in."""

    def __init__(
        self, model, objective, train_set, val_set, config, run_dir, task, collate_fn, progress, data_stats,
        data_state=None,
    ):
        self.rank, self.world = world()
        self.config, self.model, self.objective, self.task = config, model, objective, task
        self.train_set, self.data_stats, self.data_state = train_set, data_stats, data_state or {}
        self.device = resolve_device(config.device, self.world)
        self.autocast = _autocast(self.device, config.precision)
        seed_everything(config.seed + self.rank)
        self.run_dir = RunDir(run_dir, writer=self.rank == 0)
        self.progress = Progress(progress and self.rank == 0)
        self.inputs, self.outputs = model_inputs(model), objective.outputs
        check_inputs(self.inputs, train_set[0])
        self.threads, self.threads_why = self._threads(collate_fn)
        model.to(self.device)
        if config.strategy == "fsdp":      # before the optimizer is built: it steps the shards
            shard_by_block(model)
        if config.batch_size % self.world:
            raise ConfigError("batch_size", f"{config.batch_size} does not split evenly into {self.world} processes")
        self.sampler = ResumableSampler(train_set, num_replicas=self.world, rank=self.rank, seed=config.seed)
        self.sampler.lengths, self.sampler.batch_size = bucket_lengths(train_set), config.batch_size // self.world
        self.loader = self._loader(train_set, self.sampler, collate_fn)
        self.val_loader = None
        if val_set is not None:  # a strided shard, without DistributedSampler's padding: each example counts once
            self.val_loader = self._loader(val_set, range(self.rank, len(val_set), self.world), collate_fn)
        self.steps_per_epoch = math.ceil(self.sampler.num_samples / self.loader.batch_size)
        self.optimizer = build_optimizer(model, config)
        self.l1_params = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        self.schedule = Schedule(config.schedule, config.lr, config.epochs, self.steps_per_epoch)
        monitor = config.early_stopping
        if val_set is None and monitor.metric == "val_loss":
            monitor = dataclasses.replace(monitor, metric="train_loss")
        self.stopper = EarlyStopping(monitor)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.epoch, self.step, self.seen, self.sums = 0, 0, 0, {}  # position in the run, running loss sums
        self.stop_requested, self.last_eval = False, {}
        self.writer = CheckpointWriter()
        self.top_k: list[tuple[float, int, str]] = []    # keep_best: (metric, epoch, file name), best first
        self.logger_factories = logger_factories(config.loggers) if self.rank == 0 else {}
        self.loggers: list[Logger] = []

    def _threads(self, collate_fn: Callable) -> tuple[int, str]:
        """The intra-op threads of this process, and why."""
        if self.config.threads != "auto":
            return self.config.threads, "threads setting"
        if "OMP_NUM_THREADS" in os.environ:
            return torch.get_num_threads(), "OMP_NUM_THREADS"
        if self.device.type != "cpu":      # the CPU only feeds the accelerator: torch's default is fine
            return torch.get_num_threads(), f"auto on {self.device.type}"
        example = collate_fn([self.train_set[0]])
        flops = step_flops(self.model, lambda: forward(self.model, example, self.inputs, self.outputs),
                           self.config.batch_size // self.world)
        return auto_threads(flops, processes=self.world), f"auto: {flops / 1e9:.2g} GFLOP per step"

    def _loader(self, dataset: Dataset, sampler, collate_fn: Callable) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size // self.world,
            sampler=sampler,
            collate_fn=collate_fn,
            num_workers=self.config.num_workers,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_ignore_sigint,
            generator=torch.Generator(),  # its own: starting an epoch must not draw from the global stream
        )

    def run(self, resume: bool, run_files: dict[str, bytes] | None = None, loggers: list[Logger] = ()) -> dict:
        self.run_dir.start(self.config.to_dict(), resume, run_files)
        history = self._restore() if resume else []
        try:
            self._start_loggers(history, loggers)
            return self._train(history)
        except OSError as error:            # a full disk, a read-only or vanished run directory
            raise RunDirError(self.run_dir.write_failure(error)) from error
        finally:
            for logger in self.loggers:
                logger.close()

    def _start_loggers(self, history: list[dict], extra: list[Logger]) -> None:
        """metrics.csv, the configured loggers and those passed to fit (rank 0 only), and a line saying
        how many threads train and where TensorBoard reads from."""
        if self.rank != 0:
            return
        step = self.epoch * self.steps_per_epoch + self.step
        self.loggers = [CsvLogger(self.run_dir.metrics_csv, history)]
        self.loggers += [factory(self.run_dir.path, step) for factory in self.logger_factories.values()]
        self.loggers += extra
        for logger in self.loggers:
            logger.log_params(self.config.to_dict())
        self.progress.line(f"training on {self.device} with {self.threads} thread(s) ({self.threads_why})")
        if "tensorboard" in self.logger_factories:
            self.progress.line(f"TensorBoard: tensorboard --logdir {self.run_dir.path} (off: -o loggers=[])")

    def _train(self, history: list[dict]) -> dict:
        self.net = self._wrap()
        started = time.time()
        with self._graceful_sigint():
            try:
                while self.epoch < self.config.epochs and not self.stopper.should_stop:
                    history.append(self._run_epoch())
            except KeyboardInterrupt:
                self._save([self.run_dir.last])
                self.writer.wait()
                self.progress.line(f"interrupted in epoch {self.epoch + 1} after step {self.step}: "
                                   f"saved {self.run_dir.last}")
                self._finish("interrupted", history, time.time() - started)
                raise
            except TrainingDiverged as error:
                self._finish("diverged", history, time.time() - started, str(error))
                raise
            finally:
                self.writer.wait()
        status = "early_stopped" if self.stopper.should_stop else "completed"
        return self._finish(status, history, time.time() - started)

    def _wrap(self) -> nn.Module:
        net = self.model
        if self.world > 1 and self.config.strategy == "ddp":
            devices = [self.device.index] if self.device.type == "cuda" else None
            net = DistributedDataParallel(net, device_ids=devices)
        if self.config.compile:
            net = torch.compile(net, backend="inductor" if self.config.compile is True else self.config.compile)
        return net

    def _run_epoch(self) -> dict:
        started = time.time()
        record = {"epoch": self.epoch + 1, "step": (self.epoch + 1) * self.steps_per_epoch,
                  **_prefixed("train_", self._train_epoch())}
        if self.val_loader is not None:
            # The plain module evaluates: a DDP wrapper would synchronise on every (uneven) batch.
            evaluator = self.net if self.world == 1 else self.model
            with gathered(self.model):
                self.last_eval = run_evaluation(
                    evaluator, self.val_loader, self.objective, self.task, self.device, self.autocast, self.model
                )
            record |= _prefixed("val_", {k: v for k, v in self.last_eval.items() if k != "confusion"})
        record |= {"lr": self.optimizer.param_groups[0]["lr"], "time": time.time() - started}
        improved = self.stopper.update(record)
        self.schedule.end_epoch(improved)
        self.epoch, self.step, self.seen, self.sums = self.epoch + 1, 0, 0, {}
        self.run_dir.log_epoch(record)
        for logger in self.loggers:
            logger.log_metrics(record, record["step"])
        kept, dropped = self._rank_top_k(record)
        links = [self.run_dir.best] if improved else []
        self._save([self.run_dir.last, *links, *kept], remove=dropped)
        self.progress.line(format_record(record, self.config.epochs))
        return record

    def _rank_top_k(self, record: dict) -> tuple[list, list]:
        """keep_best: the file to add for this epoch if it is among the k best so far, and those it pushes out.

        Files are named by epoch and metric (``epoch=007-val_accuracy=0.9972.pt``) and are hard links to
        the epoch's last.pt, as best.pt is; ties go to the earlier epoch."""
        value = record.get(self.stopper.config.metric)
        if not self.config.keep_best or value is None:
            return [], []
        name = f"epoch={record['epoch']:03d}-{self.stopper.config.metric}={value:.4g}.pt"
        ranked = sorted([*self.top_k, (value, record["epoch"], name)], key=lambda e: (self.stopper.sign * e[0], e[1]))
        self.top_k = ranked[: self.config.keep_best]
        kept = [self.run_dir.path / name] if (value, record["epoch"], name) in self.top_k else []
        return kept, [self.run_dir.path / entry[2] for entry in ranked[self.config.keep_best :]
                      if entry[2] != name]

    def _train_epoch(self) -> dict[str, float]:
        self.net.train()
        self.sampler.set_epoch(self.epoch)
        self.sampler.start = self.step * self.loader.batch_size
        self.loader.generator.manual_seed(self.config.seed + self.epoch)  # seeds of data workers
        if hasattr(self.train_set, "set_epoch"):
            self.train_set.set_epoch(self.epoch)
        self.progress.start_epoch(self.epoch + 1, self.config.epochs, self.steps_per_epoch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        try:
            for batch in self.loader:
                n = len(next(iter(batch.values())))
                update = (self.step + 1) % self.config.accumulate == 0 or self.step + 1 == self.steps_per_epoch
                parts = self._train_step(to_device(batch, self.device), n / self._group_size(), update)
                self.step += 1
                if parts is None:                       # a non-finite loss, skipped as asked
                    continue
                for key, value in parts.items():
                    self.sums[key] = self.sums.get(key, 0.0) + value * n
                self.seen += n
                self.progress.step(parts["loss"])
                self._check_flags(parts, update)
        finally:
            self.progress.end_epoch()
        totals = torch.tensor([*self.sums.values(), self.seen], dtype=torch.float64, device=self.device)
        totals = all_reduce_sum(totals).tolist()
        return {key: total / totals[-1] for key, total in zip(self.sums, totals)}

    def _group_size(self) -> int:
        """Examples in the accumulation group of the current batch (the last group and batch of an
        epoch may be short): each batch's loss is weighted by its share of them, so that the summed
        gradients are those of the mean loss over the group, as one big batch would give."""
        size, total = self.loader.batch_size, self.sampler.num_samples
        first = self.step - self.step % self.config.accumulate
        last = min(first + self.config.accumulate, self.steps_per_epoch)
        return sum(min(size, total - b * size) for b in range(first, last))

    def _train_step(self, batch: dict, weight: float, update: bool) -> dict[str, float] | None:
        """Forward and backward on one batch, its loss weighted by `weight`; the optimizer steps on `update`
        (every `accumulate` batches) and the gradients are then cleared."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule(self.epoch, self.step)
        with self.autocast():
            loss, parts = self.objective(forward(self.net, batch, self.inputs, self.outputs), batch)
            if self.config.l1:
                loss = loss + self.config.l1 * sum(p.abs().sum() for p in self.l1_params)
                parts["loss_with_l1"] = loss.item()
        if self.config.on_nonfinite == "skip" and self._nonfinite_anywhere(loss):
            self.progress.line(f"skipped a batch with a non-finite loss at epoch {self.epoch + 1}, "
                               f"step {self.step + 1} (on_nonfinite: skip)")
            if update:      # the group ends without its update: its gradients must not leak into the next
                self.optimizer.zero_grad(set_to_none=True)
            return None
        self.scaler.scale(loss if weight == 1 else loss * weight).backward()
        if update:
            if self.config.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return parts

    def _nonfinite_anywhere(self, loss: Tensor) -> bool:
        """True if the loss is NaN or infinite in any process (all must skip together)."""
        bad = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0], device=self.device)
        return bool(all_reduce_sum(bad).item() if self.world > 1 else bad.item())

    def _check_flags(self, parts: dict, update: bool) -> None:
        """After a step: stop on a non-finite loss, or at a Ctrl-C, consistently across processes.

        A non-finite step has already been applied, but only in memory: the
        checkpoints on disk stay those of the last good epoch. A Ctrl-C waits for the
        optimizer step that ends an accumulation group (gradients are not saved).
        """
        diverged = not all(math.isfinite(v) for v in parts.values())
        flags = [float(diverged), float(self.stop_requested and update)]
        if self.world > 1:
            flags = all_reduce_sum(torch.tensor(flags, device=self.device)).tolist()
        if flags[0]:
            raise TrainingDiverged(self._divergence_message(parts))
        if flags[1]:
            raise KeyboardInterrupt

    def _divergence_message(self, parts: dict) -> str:
        size, step = self.loader.batch_size, self.step - 1
        samples = self.sampler.epoch_order()[step * size : (step + 1) * size]
        values = ", ".join(f"{key} {value}" for key, value in parts.items())
        self.writer.wait()
        last = self.run_dir.last
        kept = f"the last good checkpoint is {last}" if last.exists() else "no epoch finished, so no checkpoint"
        return (
            f"the loss became non-finite ({values}) at epoch {self.epoch + 1}, step {step + 1} of "
            f"{self.steps_per_epoch}, on the batch of samples {samples}; {kept}"
        )

    @contextlib.contextmanager
    def _graceful_sigint(self):
        """The first Ctrl-C asks the loop to stop after the current step (and save); a second one aborts."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum, frame):
            if os.getpid() != owner:  # a forked data worker before its worker_init_fn ran
                return
            self.stop_requested = True
            signal.signal(signal.SIGINT, previous)
            self.progress.line("stopping after this step to save a checkpoint (Ctrl-C again to abort)")

        owner = os.getpid()
        previous = signal.signal(signal.SIGINT, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _state(self) -> dict:
        sharded = self.config.strategy == "fsdp"    # the weights and optimizer are in X.dcp/ (sharding.py)
        return {
            **({"sharded": True} if sharded else {}),
            "model": {} if sharded else self.model.state_dict(),
            "optimizer": {} if sharded else self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "schedule": self.schedule.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "progress": {"epoch": self.epoch, "step": self.step, "seen": self.seen, "sums": self.sums},
            "top_k": [list(entry) for entry in self.top_k],
            "config": self.config.to_dict(),
            "data_stats": self.data_stats,
            "data_state": self.data_state,
        }

    def _save(self, paths: list, remove: list = ()) -> None:
        """Save to paths[0], link the other paths to it, then delete `remove` (top-k files pushed out)."""
        rng = all_gather(rng_state())  # every process's generators, so that each resumes its own stream
        if self.config.strategy == "fsdp":
            save_shards(self.model, self.optimizer, shards_of(paths[0]), tuple(map(shards_of, paths[1:])),
                        {"epoch": self.epoch, "step": self.step})
        if self.rank == 0:
            self.writer.save(paths[0], self._state() | {"rng": rng}, links=tuple(paths[1:]), remove=tuple(remove))
            if self.config.strategy == "fsdp":     # a top-k file pushed out takes its shards with it
                for path in remove:
                    shutil.rmtree(shards_of(path), ignore_errors=True)

    def _restore(self) -> list[dict]:
        path, state = self.run_dir.load_state("last")  # on the CPU: generator states must be CPU tensors
        restore_weights(self.model, self.optimizer, state, path, self.config.strategy)
        if self.scaler.is_enabled():
            self.scaler.load_state_dict(state["scaler"])
        self.schedule.load_state_dict(state["schedule"])
        self.stopper.load_state_dict(state["early_stopping"])
        progress = state["progress"]
        self.epoch, self.step = progress["epoch"], progress["step"]
        self.seen, self.sums = progress["seen"], progress["sums"]
        self._restore_top_k(state.get("top_k", []))
        changed = sorted(k for k, v in self.config.to_dict().items() if state["config"].get(k) != v)
        if set(changed) - RESUMABLE_CHANGES:
            warnings.warn(f"resuming {self.run_dir.path} with changed settings: {', '.join(changed)}", stacklevel=4)
        if self.rank < len(state["rng"]):
            set_rng_state(state["rng"][self.rank])
        return self.run_dir.history(self.epoch)

    def _restore_top_k(self, saved: list) -> None:
        """The k best as of the checkpoint: files of epochs after it (an attempt that went on past it) are
        deleted, and entries whose file a crash kept from being linked are forgotten."""
        self.top_k = [(value, epoch, name) for value, epoch, name in saved if (self.run_dir.path / name).exists()]
        if self.rank == 0:
            kept = {name for _, _, name in self.top_k}
            for path in self.run_dir.path.glob("epoch=*.pt"):
                if path.name not in kept:
                    path.unlink()

    def _finish(self, status: str, history: list[dict], seconds: float, message: str | None = None) -> dict:
        summary = {
            "status": status,
            "epochs_completed": self.epoch,
            "best_epoch": self.stopper.best_epoch,
            "best": {self.stopper.config.metric: self.stopper.best},
            "last": history[-1] if history else None,
            "confusion": self.last_eval.get("confusion"),
            "data_stats": self.data_stats,
            "seconds": seconds,
            "message": message,
        }
        self.run_dir.write_summary(summary)
        self.run_dir.plot(history)
        return summary


def _prefixed(prefix: str, values: dict) -> dict:
    return {prefix + key: value for key, value in values.items()}


def _autocast(device: torch.device, precision: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for the precision; fp32 runs without one."""
    if precision == "fp32":
        return contextlib.nullcontext
    if not torch.amp.is_autocast_available(device.type):
        raise ConfigError("precision", f"{precision} needs autocast, which {device.type} does not offer")
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision", "this GPU does not support bf16; use fp16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return functools.partial(torch.autocast, device.type, dtype=dtype)
