"""A reusable optimisation phase: which parameters learn, on which loss, for how many updates.

:class:`PhaseRunner` owns what every SMT-style phase needs: an AdamW optimiser over the phase's
parameters, a learning-rate schedule, gradient clipping, bf16 autocast on CUDA, data-parallel
gradients (DDP) when the context spans several processes, averaged metric lines every
``log_every`` updates (with an evaluation every ``eval_every``), and a resume point every
``checkpoint_every`` updates. It runs a phase in one go (pretraining) or a few updates at a time
(from inside an RL loop), and its whole state round-trips through :meth:`state_dict`.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from smt_rl.device import autocast
from smt_rl.distributed import DistContext
from smt_rl.errors import NonFiniteError

LossFn = Callable[[TensorDict], tuple[torch.Tensor, dict[str, float]]]
BAR_KEYS = ("loss/total", "loss/dyn", "dmt/loss", "probe/cue_accuracy")  # shown on the bar


def warmup_cosine(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor of update ``u``: linear warm-up over ``warmup`` updates, then cosine
    decay to 10% at ``total``."""

    def factor(update: int) -> float:
        if update < warmup:
            return (update + 1) / warmup
        progress = (update - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


@dataclass
class Phase:
    """One optimisation phase."""

    name: str  # prefix of its log lines and progress bar ("smt", "dmt", "bptt")
    updates: int  # updates in the phase
    params: list[nn.Parameter]  # what learns (every other parameter is frozen meanwhile)
    lr: float  # peak learning rate
    loss: LossFn  # batch -> (loss, metrics)
    lr_key: str = "the learning rate"  # the config key of ``lr`` (for messages)


@dataclass
class PhaseSettings:
    """How a phase optimises, logs, evaluates and saves."""

    weight_decay: float  # AdamW weight decay
    grad_clip: float  # max global gradient norm
    warmup: int  # linear warm-up updates (capped at a quarter of the phase)
    log_every: int  # updates between metric lines
    eval_every: int  # updates between evaluations (on a log step)
    checkpoint_every: int  # updates between resume points (0: only at the phase's end)


class _LossModule(nn.Module):
    """A loss function as a module, so that DDP can wrap it: ``batch -> (loss, metrics)``."""

    def __init__(self, model: nn.Module, loss: LossFn) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch: TensorDict):
        return self.loss(batch)


class PhaseRunner:
    """Runs the updates of one :class:`Phase`.

    Args:
        phase: what learns, on which loss.
        model: the module holding every parameter (the phase's are unfrozen, the rest frozen).
        sample: draws the next training batch (already on ``ctx.device``).
        settings: optimisation, logging and resume cadence.
        ctx: the (possibly data-parallel) context; rank 0 alone logs and evaluates.
        log: receives ``(update, metrics)`` at every log step (rank 0).
        evaluate: returns held-out metrics, merged into a log line every ``eval_every`` (rank 0).
        on_checkpoint: called with the runner every ``checkpoint_every`` updates and at the end
            (a resume point; every rank calls it).
        started: ``time.perf_counter()`` at the start of the run (for ``wall_s``).
        schedule: the learning-rate factor of each update (default: warm-up, then cosine decay
            over the phase; a phase run from inside an RL loop may keep it constant).
    """

    def __init__(
        self,
        phase: Phase,
        model: nn.Module,
        sample: Callable[[], TensorDict],
        settings: PhaseSettings,
        ctx: DistContext,
        *,
        log: Callable[[int, dict[str, float]], None] | None = None,
        evaluate: Callable[[], dict[str, float]] | None = None,
        on_checkpoint: Callable[[PhaseRunner], None] | None = None,
        started: float | None = None,
        schedule: Callable[[int], float] | None = None,
    ) -> None:
        self.phase, self.model, self.sample, self.settings, self.ctx = (
            phase,
            model,
            sample,
            settings,
            ctx,
        )
        self.log, self.evaluate, self.on_checkpoint = log, evaluate, on_checkpoint
        self.started = time.perf_counter() if started is None else started
        self.optimizer = torch.optim.AdamW(
            phase.params, lr=phase.lr, weight_decay=settings.weight_decay
        )
        warmup = min(settings.warmup, phase.updates // 4 + 1)
        self.schedule = schedule or warmup_cosine(warmup, phase.updates)
        self.loss: nn.Module | LossFn = phase.loss
        if ctx.enabled:
            device = ctx.device
            self.loss = DistributedDataParallel(
                _LossModule(model, phase.loss),
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.update = 0  # updates done
        self.sums: dict[str, float] = defaultdict(float)  # metric sums since the last line
        self.count = 0  # updates summed in self.sums
        self.last: dict[str, float] = {}  # the last logged line

    @property
    def done(self) -> bool:
        return self.update >= self.phase.updates

    def run(self, updates: int | None = None, progress: bool = False) -> dict[str, float]:
        """Run ``updates`` more updates (None: to the end of the phase); returns the last line."""
        end = (
            self.phase.updates
            if updates is None
            else min(self.phase.updates, self.update + updates)
        )
        self._freeze_others()
        bar = tqdm(
            total=self.phase.updates,
            initial=self.update,
            desc=self.phase.name,
            unit="upd",
            disable=not (progress and self.ctx.is_main),
        )
        with bar:
            while self.update < end:
                self.step()
                bar.update(1)
                if self.count == 0:  # a line was just logged
                    shown = {k: v for k, v in self.last.items() if k in BAR_KEYS}
                    bar.set_postfix({k.split("/")[-1]: f"{v:.4g}" for k, v in shown.items()})
        return self.last

    def _freeze_others(self) -> None:
        """Only the phase's parameters take gradients (and DDP syncs only those)."""
        trainable = {id(p) for p in self.phase.params}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trainable)

    def step(self) -> None:
        """One update, then a log line, an evaluation and a resume point when they are due."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.phase.lr * self.schedule(self.update)
        batch = self.sample()
        with autocast(self.ctx.device):
            loss, metrics = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.phase.params, self.settings.grad_clip)
        if not torch.isfinite(grad_norm):  # the same on every rank (DDP averages gradients)
            raise NonFiniteError(
                f"{self.phase.name} phase, update {self.update + 1}: the loss is "
                f"{float(loss.detach()):.4g} and its gradient norm {float(grad_norm)}; the run "
                f"stops before the weights turn to NaN. Lower {self.phase.lr_key} (now "
                f"{self.phase.lr}) or look for extreme values in the data; the last resume point "
                "is kept."
            )
        self.optimizer.step()
        for key, value in metrics.items():
            self.sums[key] += value
        self.count += 1
        self.update += 1
        s = self.settings
        if self.update % s.log_every == 0 or self.done:
            self._log_line(float(grad_norm), self.update % s.eval_every == 0 or self.done)
        due = self.done or (s.checkpoint_every and self.update % s.checkpoint_every == 0)
        if due and self.on_checkpoint is not None:
            self.on_checkpoint(self)

    def take_averages(self) -> dict[str, float]:
        """The metrics averaged over the updates since the last call (or log line), then forgotten:
        for callers that log on their own cadence (``log_every`` out of reach)."""
        averages = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        self.sums.clear()
        self.count = 0
        return averages

    def _log_line(self, grad_norm: float, evaluate: bool) -> None:
        """Average the metrics since the last line, add the evaluation if due, and log."""
        line = {k: v / self.count for k, v in self.sums.items()}
        line["grad_norm"] = grad_norm
        line["lr"] = self.optimizer.param_groups[0]["lr"]
        line["wall_s"] = time.perf_counter() - self.started
        if self.ctx.is_main:
            if evaluate and self.evaluate is not None:
                line.update(self.evaluate())
            if self.log is not None:
                self.log(self.update, line)
        self.last = line
        self.sums.clear()
        self.count = 0

    def state_dict(self) -> dict[str, Any]:
        """Optimiser, counters and the metric sums since the last line (tensors and numbers)."""
        return {
            "update": self.update,
            "optimizer": self.optimizer.state_dict(),
            "sums": dict(self.sums),
            "count": self.count,
            "last": self.last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.update = int(state["update"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sums = defaultdict(float, state["sums"])
        self.count, self.last = int(state["count"]), dict(state["last"])
