"""`python -m meit.data synth|inspect|render`: write, check and render ECG datasets."""

from __future__ import annotations

import argparse
import importlib

# subcommand -> (module, function); each function takes the parsed argparse.Namespace.
COMMANDS = {
    "synth": ("meit.data.synth", "synth_command"),
    "inspect": ("meit.data.inspect", "inspect_command"),
    "render": ("meit.data.render", "render_command"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m meit.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write a synthetic dataset in the real PTB-XL or MIMIC-IV-ECG format")
    synth.add_argument("--out", required=True, help="output directory (the dataset root)")
    synth.add_argument("--format", choices=["ptbxl", "mimic"], required=True, help="on-disk format and report style")
    synth.add_argument("--n", type=int, required=True, help="number of records")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same dataset)")
    synth.add_argument("--workers", type=int, default=None, help="writer processes (default: CPU count)")

    inspect = sub.add_parser("inspect", help="summarise a dataset before training")
    inspect.add_argument("--dataset", choices=["ptbxl", "mimic"], required=True)
    inspect.add_argument("--root", required=True, help="dataset root directory")
    inspect.add_argument("--sampling-rate", type=int, default=None, help="100 or 500 (default: the dataset's native)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    inspect.add_argument("--no-signals", action="store_true", help="check metadata only, do not read the waveforms")

    render = sub.add_parser("render", help="render a dataset's records as paper-like 12-lead ECG images (PNG)")
    render.add_argument("--dataset", choices=["ptbxl", "mimic"], required=True)
    render.add_argument("--root", required=True, help="dataset root directory")
    render.add_argument("--out", required=True, help="output directory for the PNG files")
    render.add_argument("--sampling-rate", type=int, default=None)
    render.add_argument("--limit", type=int, default=None, help="render at most this many records")
    render.add_argument("--dpi", type=int, default=100)
    render.add_argument("--artefacts", nargs="*", default=[], help="artefact names, e.g. rotation blur crease")
    render.add_argument("--seed", type=int, default=0)
    render.add_argument("--workers", type=int, default=None)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    module_name, function_name = COMMANDS[args.command]
    getattr(importlib.import_module(module_name), function_name)(args)


if __name__ == "__main__":
    main()
