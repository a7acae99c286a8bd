"""``python -m zslfast``: the package's commands, in one place. Each is run as ``python -m MODULE``
(``--help`` on any of them gives its options)."""

COMMANDS = (
    ("zslfast.train", "train and evaluate one method on one dataset (one seed, or --seeds with a summary)"),
    ("zslfast.sweep", "the main job: every method on one dataset over seeds, and one comparison table"),
    ("zslfast.predict", "predict with a trained run: class ids and names of new features (CSV)"),
    ("zslfast.report", "one table (Markdown / CSV) from any set of run folders"),
    ("zslfast.plot", "plots of a finished run (training curves, feature t-SNE, attention maps)"),
    ("zslfast.golden", "record / check the golden results that pin every method's numbers"),
    ("zslfast.data", "data tools: check dataset folders, region files, extract region features"),
)


def main():
    print("zslfast commands (python -m MODULE --help for the options):")
    for module, what in COMMANDS:
        print(f"  python -m {module:<16} {what}")


if __name__ == "__main__":
    main()
