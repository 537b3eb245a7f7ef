"""`python -m meit.data inspect`: what a dataset holds, checked before training.

Reports records found, usable, skipped by reason, leads, rate, length, report languages, label
counts and split sizes, as rich tables or (with --json) one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from meit.data.records import STANDARD_LEADS, ECGRecord, RecordError, load_signal, read_header
from meit.data.scp import superclasses
from meit.data.source import Source
from meit.data.sources import open_source
from meit.data.splits import split_records

_GERMAN = frozenset(
    "sinusrhythmus normales ekg linkstyp rechtstyp lagetyp steiltyp indifferenztyp periphere niederspannung "
    "unbestaetigter unbestätigter bericht und mit der die das nicht vorhofflimmern ventrikulaere ventrikuläre "
    "extrasystolen extrasystole linksschenkelblock rechtsschenkelblock überdrehter ueberdrehter "
    "linksherzhypertrophie abnormal grenzwertiges pathologisches vermutlich möglicherweise wahrscheinlich "
    "inferiorer anteriorer septaler lateraler infarkt alter ischämie ischaemie t-welle st-strecke senkung "
    "hebung unspezifische av-block verzögerung ekg-befund sinustachykardie sinusbradykardie".split()
)
_ENGLISH = frozenset(
    "sinus rhythm normal ecg with and the of left right axis deviation block bundle branch abnormal borderline "
    "possible probable atrial fibrillation flutter ventricular premature complexes hypertrophy voltage low "
    "st elevation depression inversion t wave waves tachycardia bradycardia infarct anterior inferior lateral "
    "septal age undetermined otherwise degree first leads limb consider changes nonspecific non-specific".split()
)
_WORD = re.compile(r"[a-zäöüß\-]+")
SIGNAL_CHUNK = 64


def report_language(text: str) -> str:
    """"german", "english" or "unknown", by counting common words of each language (and umlauts/ß)."""
    words = _WORD.findall(text.lower())
    german = sum(w in _GERMAN for w in words) + sum(ch in "äöüß" for ch in text.lower())
    english = sum(w in _ENGLISH for w in words)
    if german == english:
        return "unknown"
    return "german" if german > english else "english"


def _check_one(args: tuple[str, int, int]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(reason or None, message or None, repairs) for one record path; runs in a worker."""
    path, rate, n_samples = args
    try:
        return None, None, load_signal(Path(path), rate, n_samples).repairs
    except RecordError as error:
        return error.reason, str(error), ()
    except Exception as error:  # one odd file must not stop the scan
        return "read_error", f"{path}: {type(error).__name__}: {error}", ()


def scan_signals(
    source: Source, n_samples: int, progress: bool = True
) -> tuple[list[ECGRecord], Counter, Counter, dict[str, str]]:
    """Reads every waveform of `source` (in parallel for large datasets).

    Returns:
        (records whose signals are usable, skip reason -> count, repair -> count,
        skip reason -> the first such message, naming the file).
    """
    jobs = [(str(r.path), source.sampling_rate, n_samples) for r in source.records]
    workers = min(os.cpu_count() or 1, 8) if len(jobs) > 2000 else 1
    bar = tqdm(total=len(jobs), unit="rec", desc="reading waveforms", disable=not progress, file=sys.stderr)
    usable, skipped, repaired, examples = [], Counter(), Counter(), {}
    with bar:
        if workers > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                results = pool.map(_check_one, jobs, chunksize=SIGNAL_CHUNK)
                _collect(results, source.records, usable, (skipped, repaired, examples), bar)
        else:
            _collect(map(_check_one, jobs), source.records, usable, (skipped, repaired, examples), bar)
    return usable, skipped, repaired, examples


def _collect(results, records, usable, counts, bar) -> None:
    skipped, repaired, examples = counts
    for record, (reason, message, repairs) in zip(records, results):
        if reason is None:
            usable.append(record)
            repaired.update(repairs)
        else:
            skipped[reason] += 1
            examples.setdefault(reason, message)
        bar.update(1)


def _header_facts(records: list[ECGRecord], rate: int) -> dict[str, Any]:
    """Native rate, length and lead names from the first readable header."""
    for record in records[:50]:
        try:
            header = read_header(record.path)
        except RecordError:
            continue
        return {
            "native_rate": float(header.fs),
            "n_samples": int(round(header.sig_len * rate / header.fs)),
            "source_leads": [str(n) for n in header.sig_name],
        }
    return {"native_rate": None, "n_samples": int(round(10 * rate)), "source_leads": []}


def summarize(source: Source, read_signals: bool = True, progress: bool = True, seed: int = 0) -> dict[str, Any]:
    """The inspect summary of a source as a JSON-ready dict.

    Args:
        source: the opened dataset.
        read_signals: read (validate) every waveform; otherwise only the metadata is checked.
        progress: show a progress bar while reading waveforms.
        seed: split seed.

    Returns:
        Keys `dataset`, `root`, `records`, `usable`, `skipped`, `skipped_examples`, `repaired`, `sampling_rate`,
        `n_leads`, `leads`, `n_samples`, `native_rate`, `source_leads`, `languages`, `labels`, `superclasses`, `splits`,
        `signals_checked`.
    """
    facts = _header_facts(source.records, source.sampling_rate)
    skipped, repaired = Counter(source.skipped), Counter(source.repaired)
    usable, examples = list(source.records), {}
    if read_signals:
        usable, signal_skips, signal_repairs, examples = scan_signals(source, facts["n_samples"], progress)
        skipped.update(signal_skips)
        repaired.update(signal_repairs)
    labels = Counter(code for r in usable for code in r.labels)
    classes = Counter(c for r in usable for c in superclasses(list(r.labels)))
    splits = split_records(source, seed=seed, records=usable) if usable else {"train": [], "val": [], "test": []}
    return {
        "dataset": source.name,
        "root": str(source.root),
        "records": len(source.records) + sum(source.skipped.values()),
        "usable": len(usable),
        "skipped": dict(sorted(skipped.items())),
        "skipped_examples": dict(sorted(examples.items())),
        "repaired": dict(sorted(repaired.items())),
        "sampling_rate": source.sampling_rate,
        "native_rate": facts["native_rate"],
        "n_leads": len(STANDARD_LEADS),
        "leads": list(STANDARD_LEADS),
        "source_leads": facts["source_leads"],
        "n_samples": facts["n_samples"],
        "languages": dict(Counter(report_language(r.report) for r in usable).most_common()),
        "labels": dict(labels.most_common()),
        "superclasses": dict(classes.most_common()),
        "splits": {name: len(records) for name, records in splits.items()},
        "signals_checked": read_signals,
    }


def print_tables(summary: dict[str, Any]) -> None:
    """Prints the summary as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    overview = Table(title=f"{summary['dataset']} at {summary['root']}", show_header=False)
    for key in ("records", "usable", "sampling_rate", "native_rate", "n_samples", "n_leads", "signals_checked"):
        overview.add_row(key.replace("_", " "), str(summary[key]))
    overview.add_row("leads", " ".join(summary["leads"]))
    overview.add_row("leads in files", " ".join(summary["source_leads"]) or "-")
    console.print(overview)
    for title, key in (("skipped (by reason)", "skipped"), ("repaired", "repaired"), ("report languages", "languages"),
                       ("splits", "splits"), ("diagnostic superclasses", "superclasses"), ("SCP labels", "labels")):
        table = Table(title=title, min_width=40)
        table.add_column("name")
        table.add_column("count", justify="right")
        for name, count in summary[key].items():
            table.add_row(str(name), str(count))
        if not summary[key]:
            table.add_row("(none)", "0")
        console.print(table)
    for reason, message in summary["skipped_examples"].items():
        console.print(f"[bold]{reason}[/bold], e.g. {message}", highlight=False, markup=True)


def inspect_command(args: argparse.Namespace) -> None:
    """Runs `python -m meit.data inspect` (args: dataset, root, sampling_rate, json, no_signals).

    Raises:
        SystemExit: with status 2 and a message naming the file when the dataset cannot be opened.
    """
    try:
        source = open_source(args.dataset, args.root, args.sampling_rate)
    except (RecordError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        summary = summarize(source, read_signals=not args.no_signals)
    except ValueError as error:  # e.g. a patient listed in two PTB-XL folds
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        print_tables(summary)
