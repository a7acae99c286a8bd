"""The zslfast training command.

    python -m zslfast.train [--method NAME] [--dataset NAME] [--data-root DIR] [--like NAME]
                            [--config FILE] [--set key=value ...] [--seed N] [--device DEV]
                            [--seeds 0,1,2] [--out DIR] [--quick] [--select-on-test]

    torchrun --nproc_per_node N -m zslfast.train ...    # the same run, data-parallel over N processes

With no arguments it runs ESZSL on the built-in synthetic dataset in seconds. It prints progress and a
results table, and writes ``<out>/results.json`` and ``<out>/checkpoint.pt`` (both atomically). Bad
input (unknown names, missing or malformed data files, bad settings) ends with one line on stderr
and exit code 2, before any training.
"""
import argparse
import contextlib
import json
import os
import signal
import threading
import warnings
import platform
import sys
import time

import torch

import zslfast
from zslfast import distributed, ops
from zslfast.config import annotated_yaml, resolve_config
from zslfast.data.xlsa17 import FOLDER_NAME
from zslfast.errors import ZSLError, run_cli
from zslfast.engine.export import model_record, save_model
from zslfast.io import check_writable, save_checkpoint, write_json
from zslfast.engine import METHODS, RunContext, get_method, method_class
from zslfast.engine.curves import CurveRecorder, TensorBoardLogger, require_tensorboard
from zslfast.engine.resume import RESUME_FILE, Checkpointer, Interrupted, load_resume
from zslfast.summary import config_hash

DATASET_CHOICES = ("synthetic", "AWA1", "AWA2", "CUB", "SUN", "APY", "FLO")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like every other input error
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class APIParser(_Parser):
    """The same arguments for :func:`zslfast.fit`: a bad one raises :class:`ZSLError` instead of exiting."""

    def error(self, message):
        raise ZSLError(message)


def build_parser(parser_class=_Parser):
    p = parser_class(prog="python -m zslfast.train", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default="eszsl", choices=sorted(METHODS), help="method to run (default: eszsl)")
    p.add_argument("--dataset", default="synthetic", type=_dataset_arg,
                   help=f"one of {', '.join(DATASET_CHOICES)} (default: synthetic), or the name of any "
                        "xlsa17-format folder <data-root>/NAME/ (the method's default settings apply)")
    p.add_argument("--data-root", default=os.environ.get("ZSLFAST_DATA_ROOT"),
                   help="folder with <DATASET>/res101.mat and att_splits.mat (real datasets; default: "
                        "$ZSLFAST_DATA_ROOT)")
    p.add_argument("--like", help="synthetic data shaped like a real dataset: a name (its att_splits.mat "
                                  "from ../shared/data or $ZSLFAST_SHARED_DATA) or an att_splits.mat path")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic data (default 0)")
    p.add_argument("--pooled-regions", action="store_true",
                   help="for methods on feature vectors: use region data (synthetic regions, or the region HDF5 "
                        "under --data-root) globally average-pooled, i.e. the same images SC-EGG sees")
    p.add_argument("--config", help="YAML file of settings overriding the method's defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable; dotted keys for nested settings)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--seeds", type=parse_seeds, metavar="S,S,...",
                   help="train once per seed (into <out>/seed<S>/) and write <out>/summary.json and summary.md: "
                        "every metric as mean ± std over the seeds")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--out", help="output folder (default runs/<method>_<dataset>_seed<seed>)")
    p.add_argument("--quick", action="store_true", help="a small budget for smoke runs")
    p.add_argument("--select-on-test", action="store_true",
                   help="select hyper-parameters/epochs on the TEST split, as the original papers' code does; "
                        "only to reproduce their numbers (default: a class-disjoint validation split)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--save-features", action="store_true",
                   help="also write <out>/features.pt: the synthetic features and a subsample of the real ones "
                        "(generative methods), SC-EGG's attention maps of a few images (for python -m zslfast.plot)")
    p.add_argument("--plots", action="store_true",
                   help="at the end, draw every plot that applies to <out>/plots/*.png (implies --save-features; "
                        "needs matplotlib and scikit-learn: pip install \"zslfast[plots]\")")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR (its resume.pt) with the same arguments; the "
                        "result equals an uninterrupted run's (with --seeds: finished seeds are kept)")
    p.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                   help="write <out>/resume.pt every N epochs of a stage as well as at every stage boundary "
                        "(0: boundaries only; default 10); SIGINT/SIGTERM also write it, after the current step")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings, each with the file:line and layer that set it, and exit "
                        "(nothing is loaded or trained)")
    p.add_argument("--log", choices=["none", "tensorboard"], default="none",
                   help="tensorboard: write every stage's per-epoch losses and scores to <out>/tensorboard "
                        "(needs the tensorboard package: pip install \"zslfast[tensorboard]\")")
    return p


def _dataset_arg(value):
    """A benchmark name (any case: its configs apply), ``synthetic``, or the name of any folder
    ``<data-root>/NAME/`` in xlsa17 format (the method's defaults apply)."""
    for name in DATASET_CHOICES:
        if value.lower() == name.lower():
            return name
    if not FOLDER_NAME.fullmatch(value):
        raise argparse.ArgumentTypeError(f"--dataset {value!r}: expected {', '.join(DATASET_CHOICES)} or the name of "
                                         "a folder under --data-root (letters, digits, _ . + -)")
    return value


def _device(spec):
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ZSLError(f"--device {spec!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ZSLError(f"--device {spec}: no CUDA device is available")
    return dev


def load_data(args, config):
    """The dataset the run uses (synthetic, or a real one from --data-root), in the form the
    method takes: feature vectors, or region feature maps for region-based methods (SC-EGG)."""
    from zslfast.data import load_epgn, load_xlsa17, make_synthetic
    from zslfast.data.xlsa17 import read_xlsa17_folder

    takes_regions = method_class(args.method).inputs == "regions"
    if args.pooled_regions and takes_regions:
        raise ZSLError(f"--pooled-regions is for methods on feature vectors; {args.method} reads region maps itself")
    regions = takes_regions or args.pooled_regions
    if args.dataset == "synthetic":
        if regions:
            from zslfast.data.synthetic_regions import make_synthetic_regions

            data = make_synthetic_regions(like=args.like, seed=args.data_seed)
            return data.pooled() if args.pooled_regions else data
        return make_synthetic(like=args.like, seed=args.data_seed)
    if args.like:
        raise ZSLError("--like applies to --dataset synthetic only")
    if not args.data_root:
        wanted = (f"{args.dataset}/feature_map_ResNet_101_{args.dataset}.hdf5" if regions
                  else f"{args.dataset}/res101.mat and att_splits.mat")
        raise ZSLError(f"--dataset {args.dataset} needs --data-root (a folder with {wanted}; see README "
                       "'Real data') or ZSLFAST_DATA_ROOT")
    if regions:
        from zslfast.data.regions import load_regions

        if args.pooled_regions:  # the vectors are not needed, and storage streams if the maps do not fit
            return load_regions(args.data_root, args.dataset, w2v="random").pooled()
        return load_regions(args.data_root, args.dataset, storage=config["storage"], w2v=config["w2v"])
    if config.get("data_format", "xlsa17") == "epgn":
        return load_epgn(args.data_root, args.dataset)
    if args.dataset not in DATASET_CHOICES:  # the user's own dataset: any xlsa17-format folder
        return read_xlsa17_folder(os.path.join(args.data_root, args.dataset), config.get("attributes", "att"))
    return load_xlsa17(args.data_root, args.dataset, attributes=config.get("attributes", "att"))


def format_table(rows):
    """A plain aligned table from a list of (name, value) pairs."""
    width = max(len(k) for k, _ in rows)
    lines = [f"  {k:<{width}}  {v:>8.2f}" if isinstance(v, float) else f"  {k:<{width}}  {v:>8}" for k, v in rows]
    return "\n".join(lines)


@contextlib.contextmanager
def stop_on_signals(checkpointer):
    """SIGINT / SIGTERM during training ask the run to stop after the current training step, with a
    checkpoint (a second signal stops at once); the previous handlers are restored afterwards."""
    def handler(signum, frame):
        if checkpointer.stop_requested:
            raise KeyboardInterrupt
        checkpointer.stop_requested = True
        say(f"\n[zslfast] {signal.Signals(signum).name}: finishing the current training step, then writing a "
            "checkpoint (send it again to stop at once)")

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def parse_seeds(text):
    """``--seeds 0,1,2`` as a list of distinct integers."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected integers separated by commas, e.g. 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected distinct integers, e.g. 0,1,2")
    return seeds


def dataset_label(args, method):
    """The dataset as results.json and tables name it: the built-in synthetic region images are a
    dataset of their own (``synthetic_regions``, ``synthetic_like_CUB_regions``), shared by SC-EGG
    and by ``--pooled-regions`` baselines, which differ in their variant, not their dataset."""
    key = args.dataset if args.dataset != "synthetic" or not args.like else f"synthetic_like_{args.like}"
    if args.dataset == "synthetic" and (args.pooled_regions or method.inputs == "regions"):
        key = f"{key}_regions"
    return key


def variant_label(args):
    """What distinguishes this run's configuration from the method's defaults on its dataset, as the
    report's "variant" column shows it: --pooled-regions, the --config file, the --set overrides, the
    quick budget."""
    parts = (["pooled-regions"] if args.pooled_regions else [])
    parts += ([f"config={os.path.basename(args.config)}"] if args.config else []) + list(args.set)
    return " ".join(parts + (["quick"] if args.quick else []))


def run(args, data=None):
    """Train (one seed, or every seed of ``--seeds`` with a summary); returns the results (a list with --seeds).
    ``data``: a dataset already in memory (:func:`zslfast.fit`), used instead of loading
    ``args.dataset``, whose name it carries."""
    method = get_method(args.method)
    dataset_key = dataset_label(args, method)
    if data is not None and data.info.get("without_classes"):  # not the dataset its name says
        dataset_key = f"{dataset_key}_without_{len(data.info['without_classes'])}_classes"
    # Everything that can be refused is checked before the data is loaded: the settings (types and
    # ranges), the device, and that the output folder is writable.
    sources = {}
    config = resolve_config(args.method, args.dataset, args.config, args.set, args.quick, like=args.like,
                            sources=sources)
    if args.print_config:
        print(f"# {args.method} on {dataset_key}: the resolved settings, each with where it was set (later layers win)")
        print(annotated_yaml(config, sources), end="")
        return None
    selection = "test" if args.select_on_test else method.default_selection
    if selection not in method.selection_modes:
        raise ZSLError(f"--select-on-test: {method.name} makes no model selection (selection: "
                       f"{', '.join(method.selection_modes)}), so there is nothing to choose on the test set")
    device = distributed.init(_device(args.device))  # under torchrun: this rank's device, the process group
    if args.log == "tensorboard":
        require_tensorboard()
    if args.plots:
        from zslfast.plot import require_plotting

        require_plotting()
    base = os.path.basename(str(dataset_key))
    if args.resume:
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.resume):
            raise ZSLError(f"--resume {args.resume} continues that folder; --out {args.out} names another one")
        args.out = args.resume
    if args.checkpoint_every < 0:
        raise ZSLError(f"--checkpoint-every {args.checkpoint_every}: expected a count >= 0")
    if args.seeds:
        out = args.out or os.path.join("runs", f"{args.method}_{base}_seeds{'-'.join(map(str, args.seeds))}")
        outs = [os.path.join(out, f"seed{s}") for s in args.seeds]
    else:
        out = args.out or os.path.join("runs", f"{args.method}_{base}_seed{args.seed}")
        outs = [out]
    # Files are rank 0's: it checks the output folders and reads the checkpoints, every rank gets
    # the outcome (an error included), so nothing here assumes that the ranks share a filesystem.
    distributed.on_main(lambda: [check_writable(folder) for folder in outs])
    # --resume: each checkpoint is read and checked against this run before the data is loaded
    identities = {s: {"method": method.name, "dataset": dataset_key, "seed": s, "selection": selection,
                      "data_seed": args.data_seed, "config_hash": config_hash(config),
                      "zslfast_version": zslfast.__version__} for s in args.seeds or [args.seed]}

    def read_resumes():
        found, finished = {}, {}
        for seed, folder in zip(args.seeds or [args.seed], outs):
            results = os.path.join(folder, "results.json")
            if args.resume and args.seeds and os.path.isfile(results) and not os.path.isfile(os.path.join(folder, RESUME_FILE)):
                with open(results) as f:  # this seed had finished before the interruption
                    finished[seed] = json.load(f)
            elif args.resume and (not args.seeds or os.path.isfile(os.path.join(folder, RESUME_FILE))):
                found[seed] = load_resume(folder, identities[seed])
        return found, finished

    resumes, finished_runs = distributed.on_main(read_resumes)

    t0 = time.perf_counter()
    data = load_data(args, config) if data is None else data
    load_s = time.perf_counter() - t0
    say(f"[zslfast] {method.name} on {data.summary()}")
    runs = []
    for seed, folder in zip(args.seeds or [args.seed], outs):
        if seed in finished_runs:
            runs.append(finished_runs[seed])
            continue
        runs.append(train_one(args, method, config, selection, device, data, dataset_key, seed, folder, load_s,
                              identities[seed], resumes.get(seed)))
    if not args.seeds:
        return runs[0]
    from zslfast.summary import summary_markdown, write_summary

    if not distributed.is_main():
        return runs
    summary = write_summary(out, runs)
    print("\n" + summary_markdown(summary) + f"wrote {os.path.join(out, 'summary.json')} and summary.md")
    return runs


def train_one(args, method, config, selection, device, data, dataset_key, seed, out, load_s, identity, resume=None):
    """One training run with seed ``seed`` on loaded ``data`` (continuing the checkpoint ``resume``
    when given): writes out/results.json and checkpoint.pt (rank 0 of a distributed run, once every
    rank has finished)."""
    t_start = time.perf_counter()
    rank, size = distributed.world()
    say(f"[zslfast] device {device}" + (f" (rank 0 of {size} processes)" if size > 1 else "")
        + f", operator backend {ops.backend(device)}, seed {seed}, "
        f"selection: {'TEST (original protocol)' if selection == 'test' else selection}")
    curves = CurveRecorder()
    if resume is not None:
        curves.load_state_dict(resume["recorder"])
        say(f"[zslfast] resuming from {os.path.join(out, RESUME_FILE)}")
    interrupt_after = os.environ.get("ZSLFAST_INTERRUPT_AFTER")  # test hook: stop after N training steps
    checkpointer = Checkpointer(os.path.join(out, RESUME_FILE), identity, args.checkpoint_every, resume,
                                int(interrupt_after) if interrupt_after else None, config)
    checkpointer.recorder = curves
    main_rank = rank == 0
    loggers = [TensorBoardLogger(os.path.join(out, "tensorboard"))] if args.log == "tensorboard" and main_rank else []
    ctx = RunContext(device=device, seed=seed, quick=args.quick, selection=selection,
                     progress=not args.no_progress and main_rank, callbacks=[curves, *loggers, checkpointer],
                     save_features=args.save_features or args.plots)
    t0 = time.perf_counter()
    try:
        # validation selection: the test splits are sealed for the whole run, every copy of the data
        # included, and readable only in the final scorings the run reports (zslfast.data.dataset)
        seal = (data.sealed(f"{method.name}'s validation-selection run", method.test_scorings(config))
                if selection == "validation" else contextlib.nullcontext())
        with stop_on_signals(checkpointer), seal:
            result = method.run(data, config, ctx)
    finally:
        for logger in loggers:
            logger.close()
    run_s = time.perf_counter() - t0
    fail_rank = os.environ.get("ZSLFAST_FAIL_RANK")  # test hook: this rank fails after training
    if fail_rank is not None and int(fail_rank) == rank:
        raise RuntimeError(f"ZSLFAST_FAIL_RANK={fail_rank}: failing on purpose after training")
    distributed.all_succeeded()  # a job in which any rank failed writes no results
    if not main_rank:
        return None

    ckpt = os.path.join(out, "checkpoint.pt")
    save_checkpoint(ckpt, {"method": method.name, "config": config, "state": result.state,
                           "zslfast_version": zslfast.__version__})
    model_path = save_model(out, model_record(method, config, data, result.model))
    results = {
        "method": method.name, "dataset": dataset_key, "setting": method.setting,
        "variant": variant_label(args), "embedding": method.embedding(config),
        "metrics": result.metrics, "per_task": result.per_task, "selection": result.selection,
        "history": curves.to_dict(),
        "timings": {"load_s": load_s, "run_s": run_s, **result.timings,
                    "total_s": load_s + time.perf_counter() - t_start},
        "config": config, "seed": seed, "data_seed": args.data_seed if args.dataset == "synthetic" and not getattr(args, "data_given", False) else None,
        "device": str(device), "backend": ops.backend(device), "extension": ops.extension_info(),
        "processes": size,
        "versions": {"zslfast": zslfast.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "data": data.summary(), "checkpoint": ckpt, "model": model_path, "info": result.info,
    }
    if ctx.artifacts:
        save_checkpoint(os.path.join(out, "features.pt"), ctx.artifacts)
    write_json(os.path.join(out, "results.json"), results)
    checkpointer.finish()
    if args.plots:
        from zslfast.plot import plot_all

        for kind, (path, _) in plot_all(out).items():
            say(f"[zslfast] plot {kind}: {path}")

    print(f"\n{method.name} on {dataset_key} (seed {seed}, selection: {results['selection']['on']})")
    rows = [(k, v) for k, v in result.metrics.items()]
    print(format_table(rows))
    if result.per_task:
        print("  per task: " + ", ".join(f"t{t['task']}: S {t['S']:.1f} U {t['U']:.1f} H {t['H']:.1f}"
                                         for t in result.per_task))
    print(f"  time {results['timings']['total_s']:.1f}s; wrote {os.path.join(out, 'results.json')}")
    return results


def say(message):
    """A progress line on stderr, from rank 0 only (the other ranks of a distributed run are silent)."""
    if distributed.is_main():
        print(message, file=sys.stderr)


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet = distributed.launched() and int(os.environ.get("RANK", "0")) != 0

    def body():
        together = False  # whether every rank ended alike (see distributed.shutdown)
        try:
            result = run(args)
            together = True
            return result
        except Interrupted as exc:  # every rank stopped after the same step
            together = True
            say(f"zslfast: {exc}; continue with the same arguments and --resume {os.path.dirname(exc.path)}")
            return 3
        finally:
            distributed.shutdown(together)

    # Under torchrun only rank 0 talks: the other ranks' results, tables and warnings are rank 0's
    # too. Errors are not silenced (errors.run_cli prints them with the rank).
    with contextlib.ExitStack() as stack:
        if quiet:
            stack.enter_context(contextlib.redirect_stdout(open(os.devnull, "w")))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
