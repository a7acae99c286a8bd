"""The zslfast training command.

    python -m zslfast.train [--method NAME] [--dataset NAME] [--data-root DIR] [--like NAME]
                            [--config FILE] [--set key=value ...] [--seed N] [--device DEV]
                            [--seeds 0,1,2] [--out DIR] [--quick] [--select-on-test]

    torchrun --nproc_per_node N -m zslfast.train ...    # the same run, data-parallel over N processes

With no arguments it runs ESZSL on the built-in synthetic dataset in seconds. It prints progress and a
results table, and writes ``<out>/results.json`` first, then ``checkpoint.pt`` and ``model.pt`` (each
atomically, the torch files with a checksum), beside the run's record: ``run.json`` (command, times,
versions, git commit, data file hashes), ``config.yaml`` and ``log.txt`` (:mod:`zslfast.runfolder`).
A folder holding another run is never written over without ``--overwrite``. Bad input (unknown
names, missing or malformed data files, bad settings) ends with one line on stderr and exit code 2,
before any training; a run that fails after it started (outputs that cannot be written, a diverged
loss, a lost rank) ends with one line and exit code 1, keeping what it can.
"""
import argparse
import contextlib
import json
import math
import os
import signal
import threading
import warnings
import platform
import sys
import tempfile
import time

import torch

import zslfast
from zslfast import distributed, ops
from zslfast.config import annotated_yaml, resolve_config
from zslfast.data.dataset import apply_normalization
from zslfast.data.xlsa17 import FOLDER_NAME
from zslfast import runfolder
from zslfast.errors import Diverged, RunFailed, ZSLError, run_cli
from zslfast.engine.export import MODEL_FILE, model_record, save_model, scores_curve
from zslfast.io import save_checkpoint, write_json
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
    p.add_argument("--version", action="version", version=f"zslfast {zslfast.__version__}")
    p.add_argument("--method", default="eszsl", choices=sorted(METHODS), help="method to run (default: eszsl)")
    p.add_argument("--dataset", default="synthetic", type=_dataset_arg,
                   help=f"one of {', '.join(DATASET_CHOICES)} (default: synthetic), or the name of any "
                        "xlsa17-format folder <data-root>/NAME/ (the method's default settings apply)")
    p.add_argument("--data-root", default=os.environ.get("ZSLFAST_DATA_ROOT"),
                   help="folder with <DATASET>/res101.mat and att_splits.mat (real datasets; default: "
                        "$ZSLFAST_DATA_ROOT)")
    p.add_argument("--features", metavar="FILE",
                   help="image features replacing <data-root>/<DATASET>/res101.mat: .npy, .npz, .pt, .h5/.hdf5 or .mat, "
                        "[N, D], rows in the order att_splits.mat's locations index; labels from the file (a "
                        "'labels' entry), else --labels, else res101.mat")
    p.add_argument("--labels", metavar="FILE",
                   help="class ids of --features' rows (0-based; 1-based in a .mat 'labels' field): .npy, .pt, "
                        ".txt (one per line) or .mat")
    p.add_argument("--like", help="synthetic data shaped like a real dataset: a name (its att_splits.mat "
                                  "from ../shared/data or $ZSLFAST_SHARED_DATA) or an att_splits.mat path")
    p.add_argument("--data-seed", type=_seed_arg, default=0, help="seed of the synthetic data (default 0)")
    p.add_argument("--pooled-regions", action="store_true",
                   help="for methods on feature vectors: use region data (synthetic regions, or the region HDF5 "
                        "under --data-root) globally average-pooled, i.e. the same images SC-EGG sees")
    p.add_argument("--config", help="YAML file of settings overriding the method's defaults")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one setting (repeatable; dotted keys for nested settings)")
    p.add_argument("--seed", type=_seed_arg, default=0, help="training seed (default 0)")
    p.add_argument("--seeds", type=parse_seeds, metavar="S,S,...",
                   help="train once per seed (into <out>/seed<S>/) and write <out>/summary.json and summary.md: "
                        "every metric as mean ± std over the seeds")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--out", help="output folder (default runs/<method>_<dataset>_seed<seed>, or the first free "
                                 "...-2, -3 when that holds a run); a folder holding another run is refused")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run files (results, model, checkpoints, record) already in --out")
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
                   help="continue the interrupted run in RUN_DIR (its resume.pt); alone, it reuses the arguments "
                        "the run was started with (RUN_DIR/run.json); the result equals an uninterrupted run's "
                        "(with --seeds: finished seeds are kept)")
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


SEED_MAX = 2 ** 63 - 1  # torch.manual_seed takes at most a signed 64-bit value here


def _seed_arg(text):
    """A seed: an integer in [0, 2^63 - 1]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text}: a seed must lie in [0, 2^63 - 1]")
    return value


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
    if (args.features or args.labels) and (regions or config.get("data_format", "xlsa17") == "epgn"):
        raise ZSLError(f"--features/--labels replace an xlsa17 folder's res101.mat; {args.method} reads "
                       + ("region maps (its region-feature file under --data-root)" if regions else
                          "the EPGN files (data_format epgn)"))
    if args.labels and not args.features:
        raise ZSLError("--labels goes with --features (res101.mat holds its own labels)")
    if not args.data_root:
        wanted = (f"{args.dataset}/feature_map_ResNet_101_{args.dataset}.hdf5" if regions
                  else f"{args.dataset}/res101.mat and att_splits.mat")
        raise ZSLError(f"--dataset {args.dataset} needs --data-root (a folder with {wanted}; see README "
                       "'Getting the real data') or ZSLFAST_DATA_ROOT")
    if regions:
        from zslfast.data.regions import load_regions

        if args.pooled_regions:  # the vectors are not needed, and storage streams if the maps do not fit
            return load_regions(args.data_root, args.dataset, w2v="random").pooled()
        return load_regions(args.data_root, args.dataset, storage=config["storage"], w2v=config["w2v"])
    if config.get("data_format", "xlsa17") == "epgn":
        return load_epgn(args.data_root, args.dataset)
    files = {"features_file": os.path.abspath(args.features) if args.features else "res101.mat",
             "labels_file": args.labels}
    if args.dataset not in DATASET_CHOICES:  # the user's own dataset: any xlsa17-format folder
        return read_xlsa17_folder(os.path.join(args.data_root, args.dataset), config.get("attributes", "att"), **files)
    return load_xlsa17(args.data_root, args.dataset, attributes=config.get("attributes", "att"), **files)


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
        seeds = [_seed_arg(part) for part in text.split(",") if part.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected seeds (integers in [0, 2^63 - 1]) separated "
                                         "by commas, e.g. 0,1,2") from None
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
    seeds = args.seeds or [args.seed]
    if args.out:
        out = args.out
    else:  # the default folder is never refused: a taken one moves the run to the first free -2, -3, ...
        wanted = os.path.join("runs", f"{args.method}_{base}_" + (f"seeds{'-'.join(map(str, seeds))}" if args.seeds
                                                                  else f"seed{args.seed}"))
        out = distributed.on_main(lambda: runfolder.free_folder(wanted))
        if out != wanted:
            say(f"[zslfast] {wanted} holds an earlier run; this one writes to {out}")
    outs = [os.path.join(out, f"seed{s}") for s in args.seeds] if args.seeds else [out]
    # Files are rank 0's: it claims the output folders (locked, never written over without --overwrite)
    # and reads the checkpoints, every rank gets the outcome (an error included), so nothing here
    # assumes that the ranks share a filesystem.
    locks = []

    def claim_folders():
        if args.resume and not any(runfolder.holds_run(folder) for folder in outs):
            raise ZSLError(f"--resume {args.resume}: no interrupted run there (no resume.pt"
                           + (" in its seed folders" if args.seeds else "") + ")")
        try:
            for folder in ([out] if args.seeds else []) + outs:
                locks.append(runfolder.claim(folder, resume=bool(args.resume), overwrite=args.overwrite))
        except BaseException:
            release(locks)
            raise

    distributed.on_main(claim_folders)
    try:
        return _run_in(args, method, config, sources, selection, device, data, dataset_key, out, outs)
    finally:
        release(locks)


def release(locks):
    for lock in locks:
        lock.release()
    locks.clear()


def data_files(args, config, data):
    """The files a run's data came from (hashed into run.json): the dataset file and the class tables
    beside it, the ``--like`` table, a word-vector file."""
    files = []
    if args.like:
        from zslfast.data.synthetic import find_att_splits

        files.append(find_att_splits(args.like)[0])
    source = str(getattr(data, "source", "") or "")
    if os.path.isfile(source):
        files.append(source)
        folder = os.path.dirname(source)
        files += [os.path.join(folder, f) for f in ("att_splits.mat", "sent_splits.mat")]
    if args.features and args.data_root:  # the features file may sit outside the dataset folder
        folder = os.path.join(args.data_root, args.dataset)
        files += [os.path.join(folder, f) for f in ("att_splits.mat", "sent_splits.mat", "res101.mat")
                  if not args.labels or f != "res101.mat"]
        files += [args.labels] if args.labels else []
    w2v = config.get("w2v")
    if isinstance(w2v, str) and os.path.isfile(w2v):
        files.append(w2v)
    return [f for f in files if os.path.isfile(f)]


def _run_in(args, method, config, sources, selection, device, data, dataset_key, out, outs):
    """The rest of :func:`run`, once the output folders are this run's."""
    identities = {s: {"method": method.name, "dataset": dataset_key, "seed": s, "selection": selection,
                      "data_seed": args.data_seed, "config_hash": config_hash(config),
                      "zslfast_version": zslfast.__version__} for s in args.seeds or [args.seed]}

    def read_resumes():
        found, finished = {}, {}
        for seed, folder in zip(args.seeds or [args.seed], outs):
            results = os.path.join(folder, "results.json")
            if args.resume and args.seeds and os.path.isfile(results) and not os.path.isfile(os.path.join(folder, RESUME_FILE)):
                try:  # this seed had finished before the interruption
                    with open(results, encoding="utf-8") as f:
                        finished[seed] = json.load(f)
                except (OSError, ValueError) as exc:
                    raise ZSLError(f"--resume: {results} cannot be read ({exc}); delete that seed folder to train "
                                   "the seed again") from None
                if not isinstance(finished[seed], dict) or "metrics" not in finished[seed]:
                    raise ZSLError(f"--resume: {results} is not a results file; delete that seed folder to train "
                                   "the seed again")
            elif args.resume and (not args.seeds or os.path.isfile(os.path.join(folder, RESUME_FILE))):
                found[seed] = load_resume(folder, identities[seed])
        return found, finished

    resumes, finished_runs = distributed.on_main(read_resumes)
    record = None
    main_rank = distributed.is_main()
    config_text = annotated_yaml(config, sources)
    with (runfolder.logged(out) if main_rank else contextlib.nullcontext()):
        if main_rank and args.seeds:  # the command's own record (what --resume OUT alone reads)
            record = runfolder.RunRecord(out, args, config_text, _versions())
        t0 = time.perf_counter()
        try:
            data = load_data(args, config) if data is None else data
            load_s = time.perf_counter() - t0
            check_inputs(args, method, config, sources, selection, data)
            files = distributed.on_main(lambda: runfolder.data_file_hashes(data_files(args, config, data)))
            say(f"[zslfast] {method.name} on {data.summary()}")
            runs = []
            for seed, folder in zip(args.seeds or [args.seed], outs):
                if seed in finished_runs:
                    runs.append(finished_runs[seed])
                    continue
                runs.append(train_one(args, method, config, selection, device, data, dataset_key, seed, folder,
                                      load_s, identities[seed], resumes.get(seed), config_text=config_text,
                                      files=files, own_log=bool(args.seeds)))
        except BaseException as exc:
            if record is not None:
                record.end(_status(exc), str(exc) or type(exc).__name__)
            raise
        if not args.seeds:
            return runs[0]
        from zslfast.summary import summary_markdown, write_summary

        if not main_rank:
            return runs
        summary = write_summary(out, runs)
        record.end("finished")
        show("\n" + summary_markdown(summary) + f"wrote {os.path.join(out, 'summary.json')} and summary.md")
        return runs


def _user_set(sources, key):
    """Whether setting ``key`` was given by the user (``--set`` or ``--config``), not a method's file."""
    where = sources.get(key, "")
    return where.startswith("--set") or where.endswith("(--config)")


def check_inputs(args, method, config, sources, selection, data):
    """What the loaded data makes impossible or meaningless, refused before any training: settings
    the data would ignore (recorded in results.json as if used), and the method's own checks on the
    data and on the validation view it selects on (fewer classes)."""
    if method.inputs == "regions" and args.dataset == "synthetic" and _user_set(sources, "w2v"):
        raise ZSLError(f"setting w2v = {config['w2v']!r}: the synthetic region data carries its own attribute word "
                       "vectors, so w2v applies only to region files under --data-root; remove the setting")
    validation = config.get("validation")
    if selection == "validation" and validation is not None:
        if data.official_validation_classes() is not None and _user_set(sources, "validation.unseen_fraction"):
            raise ZSLError(f"setting validation.unseen_fraction: {data.name} has its own validation classes (val_loc), "
                           "which validation holds out instead; remove the setting")
        view = data.validation_split(**validation)
        method.check_data(view, config)
    method.check_data(data, config)


def _versions():
    return {"zslfast_version": zslfast.__version__, "torch_version": torch.__version__,
            "python_version": platform.python_version()}


def _status(exc):
    """run.json's status for a run that ended with ``exc``."""
    if isinstance(exc, Interrupted):
        return "interrupted"
    return "diverged" if isinstance(exc, Diverged) else "failed"


_ACTIVE = {}  # the run in progress (its folder, its checkpointer): what a failure message reports


def checkpoint_status():
    """Where the run in progress can be continued from, in words, for a failure message (rank 0,
    which writes the checkpoints; empty on the other ranks)."""
    if not distributed.is_main():
        return ""
    checkpointer, out = _ACTIVE.get("checkpointer"), _ACTIVE.get("out")
    if checkpointer is None or not checkpointer.written:
        return "no checkpoint had been written: run it again"
    how = "torchrun ... -m zslfast.train" if distributed.launched() else "python -m zslfast.train"
    return f"{checkpointer.written}: continue with {how} --resume {out}"


def write_results(path, results):
    """Write results.json; when that fails (a full disk, a folder removed), keep the results in a
    fallback file (the temporary folder, else the home folder) and fail with one line naming both."""
    try:
        write_json(path, results)
        return path
    except OSError as exc:
        cause = exc.strerror or str(exc)
        name = f"zslfast-results-{results['method']}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
        for folder in (tempfile.gettempdir(), os.path.expanduser("~")):
            alt = os.path.join(folder, name)
            try:
                write_json(alt, results)
            except OSError:
                continue
            raise RunFailed(f"cannot write {path} ({cause}); the results were saved to {alt} instead") from None
        raise RunFailed(f"cannot write {path} ({cause}), nor a copy in {tempfile.gettempdir()} or the home folder; "
                        "the results table above is all that is left") from None


def train_one(args, method, config, selection, device, data, dataset_key, seed, out, load_s, identity, resume=None,
              config_text="", files=None, own_log=False):
    """One training run with seed ``seed`` on loaded ``data`` (continuing the checkpoint ``resume``
    when given): writes out/results.json, checkpoint.pt and model.pt, and the run's record (rank 0
    of a distributed run, once every rank has finished). ``own_log``: the run folder gets its own
    log.txt (one seed of ``--seeds``; a single run's folder is the command's, already logged)."""
    main_rank = distributed.is_main()
    record = None
    with contextlib.ExitStack() as stack:
        if main_rank:
            record = runfolder.RunRecord(out, args, config_text, _versions())
            record.record["seed"] = seed
            record.record["data_files"] = files or {}
            record.write()
            if own_log:
                stack.enter_context(runfolder.logged(out))
        try:
            results = _train_one(args, method, config, selection, device, data, dataset_key, seed, out, load_s,
                                 identity, resume)
        except BaseException as exc:
            if record is not None:
                record.end(_status(exc), str(exc) or type(exc).__name__)
            raise
        if record is not None:
            record.end("finished")
        return results


def _train_one(args, method, config, selection, device, data, dataset_key, seed, out, load_s, identity, resume):
    t_start = time.perf_counter()
    rank, size = distributed.world()
    fallback = "" if ops.extension_info()["cpu"] else " (the C++ extension was not built: pure-PyTorch fallback)"
    say(f"[zslfast] device {device}" + (f" (rank 0 of {size} processes)" if size > 1 else "")
        + f", operator backend {ops.backend(device)}{fallback}, seed {seed}, "
        f"selection: {'TEST (original protocol)' if selection == 'test' else selection}")
    curves = CurveRecorder()
    if resume is not None:
        curves.load_state_dict(resume["recorder"])
        say(f"[zslfast] resuming from {os.path.join(out, RESUME_FILE)}")
    interrupt_after = os.environ.get("ZSLFAST_INTERRUPT_AFTER")  # test hook: stop after N training steps
    checkpointer = Checkpointer(os.path.join(out, RESUME_FILE), identity, args.checkpoint_every, resume,
                                int(interrupt_after) if interrupt_after else None, config)
    checkpointer.recorder = curves
    _ACTIVE.update(out=out, checkpointer=checkpointer)  # kept after the run: a failure message reads it
    main_rank = rank == 0
    loggers = [TensorBoardLogger(os.path.join(out, "tensorboard"))] if args.log == "tensorboard" and main_rank else []
    loggers += [runfolder.EpochLog()] if main_rank else []
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
        for logger in loggers:
            if hasattr(logger, "log_result"):
                logger.log_result(result.metrics, result.per_task)
    except Diverged as exc:
        exc.checkpoint = checkpointer.written and f"{checkpointer.written}"
        raise
    finally:
        for logger in loggers:
            if hasattr(logger, "close"):
                logger.close()
    run_s = time.perf_counter() - t0
    fail_rank = os.environ.get("ZSLFAST_FAIL_RANK")  # test hook: this rank fails after training
    if fail_rank is not None and int(fail_rank) == rank:
        raise RuntimeError(f"ZSLFAST_FAIL_RANK={fail_rank}: failing on purpose after training")
    distributed.all_succeeded()  # a job in which any rank failed writes no results
    if not main_rank:
        return None
    bad = [k for k, v in result.metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise Diverged("the final evaluation", None, "the metric " + ", ".join(bad), checkpointer.written)

    ckpt = os.path.join(out, "checkpoint.pt")
    model_path = os.path.join(out, MODEL_FILE)
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
        # departures from the method's published setting that the data forced (e.g. random word vectors)
        "deviations": [d for d in [(data.info.get("w2v") or {}).get("deviation")] if d],
    }
    record = model_record(method, config, data, result.model)
    if "gzsl_s" in result.metrics:  # GZSL: the seen-unseen curve of calibrated stacking and its area
        scorer = method.scorer(record, device)  # what zslfast.load gives: the raw features, normalised here
        results["seen_unseen"] = scores_curve(
            lambda x: scorer.gzsl(apply_normalization(record["normalization"], x.to(device, torch.get_default_dtype()))),
            data)
    # The table first and results.json next: whatever fails after this, the numbers are kept.
    show(f"\n{method.name} on {dataset_key} (seed {seed}, selection: {results['selection']['on']})")
    show(format_table([(k, v) for k, v in result.metrics.items()]))
    if "seen_unseen" in results:
        show(f"  AUSUC {results['seen_unseen']['ausuc']:.2f} (area under the seen-unseen curve; "
             f"python -m zslfast.plot seen-unseen {out})")
    if result.per_task:
        show("  per task: " + ", ".join(f"t{t['task']}: S {t['S']:.1f} U {t['U']:.1f} H {t['H']:.1f}"
                                        for t in result.per_task))
    results_path = write_results(os.path.join(out, "results.json"), results)
    outputs = [(ckpt, lambda: save_checkpoint(ckpt, {"method": method.name, "config": config, "state": result.state,
                                                      "zslfast_version": zslfast.__version__})),
               (model_path, lambda: save_model(out, record))]
    if ctx.artifacts:
        outputs.append((os.path.join(out, "features.pt"),
                        lambda: save_checkpoint(os.path.join(out, "features.pt"), ctx.artifacts)))
    for path, write in outputs:
        try:
            write()
        except OSError as exc:
            raise RunFailed(f"cannot write {path} ({exc.strerror or exc}); {results_path} holds the results; "
                            + (f"{checkpointer.written} is kept: make room and run --resume {out} to write the "
                               "files again (training stages are not repeated)" if checkpointer.written else
                               "train again to get the file")) from None
    checkpointer.finish()
    if args.plots:
        from zslfast.plot import plot_all

        for kind, (path, _) in plot_all(out).items():
            say(f"[zslfast] plot {kind}: {path}")
    show(f"  time {results['timings']['total_s']:.1f}s; wrote {results_path}")
    return results


def say(message):
    """A progress line on stderr, from rank 0 only (the other ranks of a distributed run are silent),
    and in the run's log.txt."""
    if distributed.is_main():
        print(message, file=sys.stderr)
        for line in message.strip("\n").splitlines():
            runfolder.LOGGER.info(line)


def show(message):
    """A line of the run's result on stdout (rank 0), and in the run's log.txt."""
    if distributed.is_main():
        print(message)
        for line in message.strip("\n").splitlines():
            runfolder.LOGGER.info(line)


RUNTIME_ONLY = ("resume", "no_progress", "device", "checkpoint_every", "log")  # may differ when resuming


def resume_arguments(args, parser):
    """``--resume RUN_DIR`` alone (at most with options that do not change the run, RUNTIME_ONLY):
    the arguments the run was started with, from RUN_DIR/run.json; otherwise ``args`` unchanged."""
    if not args.resume:
        return args
    same_out = args.out is None or os.path.abspath(args.out) == os.path.abspath(args.resume)
    given = [k for k, v in vars(args).items() if k not in RUNTIME_ONLY + ("command",)
             and v != parser.get_default(k) and not (k == "out" and same_out)]
    if given:
        return args
    record = runfolder.read_record(args.resume)
    if record is None or not isinstance(record.get("args"), dict):
        if not os.path.isdir(args.resume):
            raise ZSLError(f"--resume {args.resume}: no such folder")
        raise ZSLError(f"--resume {args.resume}: no run.json there to take the run's arguments from; repeat the "
                       "run's arguments with --resume")
    stored = dict(record["args"])
    for k in RUNTIME_ONLY:
        if getattr(args, k) != parser.get_default(k):
            stored[k] = getattr(args, k)
    merged = vars(parser.parse_args([])) | {k: v for k, v in stored.items() if hasattr(args, k)}
    merged["resume"], merged["out"], merged["command"] = args.resume, args.resume, getattr(args, "command", None)
    return argparse.Namespace(**merged)


class Terminated(Exception):
    """SIGTERM outside training in a torchrun job (the launcher stopping the job)."""


def _terminated(signum, frame):
    raise Terminated("stopped by SIGTERM (torchrun stops every rank when one fails)")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command = runfolder.command_line(argv)  # recorded in run.json (argv None: this process's)
    quiet = distributed.launched() and int(os.environ.get("RANK", "0")) != 0

    def body():
        together = False  # whether every rank ended alike (see distributed.shutdown)
        try:
            result = run(resume_arguments(args, parser))
            together = True
            return result
        except Interrupted as exc:  # every rank stopped after the same step
            together = True
            say(f"zslfast: {exc}; continue with --resume {os.path.dirname(exc.path)}")
            return 3
        except (ZSLError, RunFailed, KeyboardInterrupt):
            raise
        except Exception as exc:
            if not distributed.launched():
                raise
            # A rank of a torchrun job: one line saying what happened and what is kept, not a traceback.
            # When a rank dies, torchrun sends the others SIGTERM (and SIGKILL 30 s later): ignored
            # from here on, so that the line gets written.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            kept = checkpoint_status()
            raise RunFailed(distributed.describe_failure(exc) + (f"; {kept}" if kept else "")) from exc
        finally:
            distributed.shutdown(together)

    # Under torchrun only rank 0 talks: the other ranks' results, tables and warnings are rank 0's
    # too. Errors are not silenced (errors.run_cli prints them with the rank).
    with contextlib.ExitStack() as stack:
        if distributed.launched() and threading.current_thread() is threading.main_thread():
            # torchrun's SIGTERM outside training (where stop_on_signals handles it) becomes an
            # exception, so this rank reports why it stopped instead of vanishing
            previous = signal.signal(signal.SIGTERM, _terminated)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        if quiet:
            stack.enter_context(contextlib.redirect_stdout(open(os.devnull, "w")))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
