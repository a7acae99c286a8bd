"""Stages a method declares and the engine runs.

A method describes its training as a *recipe*: a generator function that builds networks and yields
what to do next, top to bottom, in the order it happens::

    def recipe(self, data, config, ctx, epochs):
        with ctx.init_scope():
            net = Net(...)
        history = yield Stage("stage 1", modules={"net": net}, optimizer=rmsprop(net, ...),
                              batches=balanced, loss=lambda idx, nets: ..., iterations=600, then="freeze")
        cache = yield Transform("dense", lambda: dense_pass(net, data))
        ...
        yield Stage("stage 3", ..., step=gan_step, epochs=epochs, selected=True)
        return model

:func:`run_recipe` runs it. For every :class:`Stage` the engine

- wraps each trained module for data parallelism once (:class:`RowParallel`: in a process group the
  positional arguments are this rank's rows, the outputs are gathered; DDP averages the gradients)
  and hands the wrappers to the stage's ``loss`` / ``step`` as ``nets``;
- owns the optimiser step: for a ``loss`` stage it runs ``zero_grad``, ``backward``, optional
  gradient clipping and ``step``; a ``step`` stage (GANs, several optimisers per batch) gets an
  :class:`Optimizers` whose ``step(loss, *names)`` does the same for the optimisers it names and
  whose ``frozen(*names)`` switches the named modules' gradients off for a block;
- puts the modules in train mode, runs the engine's loop (:func:`zslfast.engine.loop.train_epochs`,
  or :func:`~zslfast.engine.loop.train_iterations` for an iteration budget), saves the stage's
  modules, optimisers, schedule and ``state`` for resume under their names, and afterwards puts the
  modules in eval mode (``then="eval"``) or also freezes them (``then="freeze"``);
- attaches the run's evaluation to the stage marked ``selected`` (the one whose epochs the selector
  chooses), and names the stage ``"<name> (validation)"`` in the selection phase;
- times every stage and transform (``<name without spaces>_s``).

A :class:`Transform` is a computation between stages (e.g. SC-EGG's dense-feature cache) that the
engine times; its value is sent back into the recipe.
"""
import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from zslfast.distributed import gather, parallel, shard, sharded, world
from zslfast.engine.loop import detached, train_epochs, train_iterations


class RowParallel(nn.Module):
    """A module as a stage trains it. In a single process a call is the module's own. In a process
    group:

    - positional tensor arguments are row-aligned: this rank runs its share of the rows and the
      outputs are gathered back to all rows, differentiably;
    - keyword arguments are passed whole; a call with keyword arguments only runs whole on every rank
      (e.g. CVC's classifiers generated from all class attributes, or a lookup that renormalises the
      rows it reads, which must change the same rows on every rank);
    - the call goes through the module's DDP wrapper when gradients flow into its parameters, and to
      the module itself otherwise (a frozen critic, a no-grad synthesis), so a method never chooses;
    - the methods the module names in ``row_methods`` (e.g. ``row_methods = ("logits",)``) are
      row-parallel too. They run on the module itself; their parameters' gradients are averaged by
      the module's DDP wrapper, so a step that calls one also calls the module (CVC: generate the
      classifiers, then score features against them).
    """

    def __init__(self, module):
        super().__init__()
        self.module = module
        trainable = any(p.requires_grad for p in module.parameters())
        self._ddp = parallel(module) if world()[1] > 1 and trainable else None

    @property
    def local(self):
        """The module as it runs on this rank's rows (its DDP wrapper while it trains), for a per-row
        composite function that shards its rows itself (e.g. read region maps, then attend)."""
        trains = torch.is_grad_enabled() and any(p.requires_grad for p in self.module.parameters())
        return self._ddp if self._ddp is not None and trains else self.module

    def forward(self, *rows, **shared):
        if world()[1] == 1:
            return self.module(*rows, **shared)
        target = self.local
        if not rows:
            return target(**shared)
        return sharded(lambda *r: target(*r, **shared), *rows)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = self.__dict__["_modules"]["module"]
            if name in getattr(module, "row_methods", ()):
                method = getattr(module, name)
                return lambda *rows, **shared: sharded(lambda *r: method(*r, **shared), *rows)
            return getattr(module, name)


class Nets:
    """The :class:`RowParallel` wrappers of a stage's modules (the trained ones and the frozen ones
    it only uses), by name (``nets.G(z, a)``)."""

    def __init__(self, modules):
        self._wrapped = {name: RowParallel(m) for name, m in modules.items()}

    def __getattr__(self, name):
        try:
            return self.__dict__["_wrapped"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name):
        return self._wrapped[name]


class Optimizers:
    """A manual stage's optimisers by name, and the modules they train (for :meth:`frozen`)."""

    def __init__(self, optimizers, modules, grad_clip=None):
        self._opts, self._modules, self.grad_clip = dict(optimizers), modules, grad_clip

    def __getitem__(self, name):
        return self._opts[name]

    def step(self, loss, *names, zero=True):
        """Zero every optimiser's gradients, back-propagate ``loss``, step the optimisers ``names``
        (default: all). A module whose optimiser is not named keeps its weights. ``zero=False``
        keeps the gradients already accumulated (GRW's two-step schedule applies its first loss's
        gradients twice)."""
        if zero:
            for opt in self._opts.values():
                opt.zero_grad(set_to_none=True)
        loss.backward()
        chosen = [self._opts[n] for n in (names or self._opts)]
        if self.grad_clip is not None:
            for opt in chosen:
                nn.utils.clip_grad_norm_([p for group in opt.param_groups for p in group["params"]], self.grad_clip)
        for opt in chosen:
            opt.step()

    @contextlib.contextmanager
    def frozen(self, *names):
        """The named modules take no gradient inside the block (their parameters' ``requires_grad``
        is switched off, then back on)."""
        params = [p for n in names for p in self._modules[n].parameters()]
        for p in params:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in params:
                p.requires_grad_(True)


@dataclass
class Stage:
    """One training stage (see the module docstring).

    Attributes:
        name: its name in progress bars, curves and checkpoints.
        modules: the modules it trains, by name (saved for resume under these names).
        uses: frozen modules its loss or step runs, by name (wrapped for rows, never trained).
        optimizer: one optimiser (a ``loss`` stage) or ``{name: optimiser}`` (a ``step`` stage; the
            names are those ``Optimizers.step`` takes).
        batches: the sampler (``epoch()``; or ``sample()`` with ``iterations``).
        loss: ``loss(batch, nets) -> loss tensor | (loss tensor, {name: logged value})``: the engine
            steps the optimiser.
        step: ``step(batch, nets, optimizers) -> {name: logged value}``: the method steps, through
            :class:`Optimizers`.
        epochs, iterations: the budget (one of them); ``chunk``: iterations per history record.
        scheduler: an LR scheduler stepped after every epoch.
        state: a :class:`zslfast.engine.resume.State` of method values the stage changes.
        then: ``"eval"`` (eval mode afterwards) or ``"freeze"`` (eval mode, no gradients).
        selected: the stage whose epochs the run's selection chooses: the run's evaluation is
            attached to it and scores ``evaluates`` (the model being built).
        grad_clip: clip the gradient norm of each stepped optimiser's parameters.
        on_epoch_start: ``f(epoch, nets)`` before each epoch's first batch (e.g. a pseudo-label
            refresh that scores data with the stage's modules).
    """

    name: str
    modules: dict
    optimizer: object
    batches: object
    loss: Optional[Callable] = None
    step: Optional[Callable] = None
    epochs: Optional[int] = None
    iterations: Optional[int] = None
    chunk: int = 100
    scheduler: object = None
    state: object = None
    then: str = "eval"
    selected: bool = False
    evaluates: object = None
    uses: dict = field(default_factory=dict)
    grad_clip: Optional[float] = None
    on_epoch_start: Optional[Callable] = None

    def __post_init__(self):
        if (self.loss is None) == (self.step is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of loss= and step=")
        if (self.epochs is None) == (self.iterations is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of epochs= and iterations=")
        reserved = [n for n in {**self.modules, **self.uses} if n == "state" or n.startswith("optimizer")]
        if reserved:  # a checkpoint saves the stage's optimisers and state under these names
            raise ValueError(f"stage {self.name!r}: module names {reserved} are reserved (state, optimizer*)")
        if self.then not in ("eval", "freeze"):
            raise ValueError(f"stage {self.name!r}: then must be 'eval' or 'freeze', got {self.then!r}")


@dataclass
class Transform:
    """A timed computation between stages; its value is sent back into the recipe. Without ``rows``
    it is ``fn()``. With ``rows`` (N) it is a per-row pass: ``fn(start, stop)`` computes rows
    [start, stop) (this rank's share in a process group; all N in one process) and returns a tensor
    or a tuple of tensors, which the engine gathers back to all N rows on every rank."""

    name: str
    fn: Callable
    rows: Optional[int] = None

    def __call__(self):
        if self.rows is None:
            return self.fn()
        start, stop = shard(self.rows)
        out = self.fn(start, stop)
        if isinstance(out, tuple):
            return tuple(gather(o, self.rows) for o in out)
        return gather(out, self.rows)


@dataclass
class Evaluation:
    """What the runner attaches to the ``selected`` stage: ``evaluate(model, epoch) -> score`` with
    the stage's ``evaluates`` model (its trained modules in eval mode), at epochs e >= ``start`` with
    e % ``every`` == 0, and the last."""

    evaluate: Optional[Callable] = None
    every: int = 1
    start: int = 1


@dataclass
class Fit:
    """What :func:`run_recipe` returns: the recipe's return value, every stage's history and the
    seconds of every stage and transform."""

    model: object
    histories: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    selected: str = None  # the name (with its phase suffix) of the selected stage


def stage_step(stage, nets=None):
    """The per-batch step function the engine runs for ``stage`` (its modules wrapped for rows, or
    ``nets``; for a ``loss`` stage the optimiser step included), e.g. for a benchmark of one step."""
    nets = nets or Nets({**stage.uses, **stage.modules})
    if stage.step is not None:
        opts = stage.optimizer if isinstance(stage.optimizer, dict) else {"optimizer": stage.optimizer}
        optimizers = Optimizers(opts, stage.modules, stage.grad_clip)
        return lambda batch: stage.step(batch, nets, optimizers)
    opt = stage.optimizer
    params = [p for group in opt.param_groups for p in group["params"]]

    def step(batch):
        out = stage.loss(batch, nets)
        loss, logged = out if isinstance(out, tuple) else (out, None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if stage.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, stage.grad_clip)
        opt.step()
        return {"loss": detached(loss), **logged} if logged else detached(loss)

    return step


def run_stage(stage, ctx, evaluation=None, suffix=""):
    """Train one :class:`Stage` (see the module docstring); returns its History."""
    nets = Nets({**stage.uses, **stage.modules})
    step = stage_step(stage, nets)
    on_epoch_start = None if stage.on_epoch_start is None else (lambda epoch: stage.on_epoch_start(epoch, nets))
    opts = stage.optimizer if isinstance(stage.optimizer, dict) else {"optimizer": stage.optimizer}
    saved = {**stage.modules, **({"optimizer": opts["optimizer"]} if "optimizer" in opts and len(opts) == 1
                                 else {f"optimizer_{k}": o for k, o in opts.items()})}
    if stage.state is not None:
        saved["state"] = stage.state
    modules = list(stage.modules.values())
    def evaluate(epoch):  # the run's evaluation of the model being built, its modules in eval mode
        for m in modules:
            m.eval()
        try:
            return evaluation.evaluate(stage.evaluates, epoch)
        finally:
            for m in modules:
                m.train()
    for m in modules:
        m.train()
    name = stage.name + suffix
    if stage.iterations is not None:
        history = train_iterations(name, stage.iterations, stage.batches, step, ctx, chunk=stage.chunk,
                                   modules=saved)
    else:
        every, start = (evaluation.every, evaluation.start) if evaluation is not None else (1, 1)
        scored = evaluation is not None and evaluation.evaluate is not None
        history = train_epochs(name, stage.epochs, stage.batches, step, ctx, scheduler=stage.scheduler,
                               evaluate=evaluate if scored else None, eval_every=every, eval_start=start,
                               on_epoch_start=on_epoch_start, modules=saved)
    for m in modules:
        m.eval()
        if stage.then == "freeze":
            m.requires_grad_(False)
    return history


def run_recipe(recipe, ctx, evaluation=None, phase="final"):
    """Run a recipe generator (see the module docstring): each yielded :class:`Stage` is trained
    (the ``selected`` one with ``evaluation``: an :class:`Evaluation` whose ``evaluate(epoch)`` the
    runner calls), each :class:`Transform` computed; returns a :class:`Fit`."""
    suffix = " (validation)" if phase == "select" else ""
    fit = Fit(None)
    value = None
    while True:
        try:
            item = recipe.send(value)
        except StopIteration as done:
            fit.model = done.value
            return fit
        t0 = time.perf_counter()
        if isinstance(item, Stage):
            value = run_stage(item, ctx, evaluation if item.selected else None, suffix)
            fit.histories[item.name] = value
            if item.selected:
                fit.selected = item.name + suffix
        elif isinstance(item, Transform):
            value = item()
        else:
            raise TypeError(f"a recipe yields Stage or Transform objects, got {type(item).__name__}")
        fit.timings[f"{item.name.replace(' ', '')}_s"] = time.perf_counter() - t0
