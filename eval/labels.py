"""Rule-based extraction of PTB-XL SCP-ECG statements (71 codes) from report text.

The phrase tables (German incl. the PTB-XL database's spellings, Swedish, English incl. MIMIC-IV-ECG machine
statements) are in :mod:`meit.eval.label_phrases`; this module is the engine. Conventions (docs/METRICS.md):

* **Normalisation.** Lower case; ä -> ae, ö -> oe, ü -> ue, å -> a, ß -> ss, "#" -> ue (the database's "f#r");
  the footer "4.46 unbestätigter bericht", annotators' "Edit: ..." notes and explanatory comments are dropped.
* **Statements.** Split at ``. ; : , \\n``, at "but/however/aber/jedoch/whereas" and at runs of two or more
  spaces. Within a statement the most specific phrase matches first and masks its span.
* **Negation** ("no", "not", "without", "kein", "nicht", "ohne" within 30 characters before; "... absent",
  "no longer present", "nicht mehr" after) drops a phrase; "cannot be excluded" / "nicht auszuschliessen" /
  "kan ej uteslutas" are hedges, not negations.
* **Uncertainty** gives PTB-XL likelihoods: 100 stated, 80 probable, 50 possible, 35 questionable
  (:func:`extract_label_likelihoods`); :func:`extract_labels` keeps every code, as PTB-XL lists hedged codes too.
* **Localised statements** (infarction, injury, ischaemia) take every location word just before the keyword,
  else the first one after it; ischaemia without a location is ISC_, an infarction without one gives no code.
* **NORM** only from explicit statements and only without a code of another diagnostic superclass; a hedged
  LVH beside LBBB is dropped (PTB-XL does not code it there).
"""

from __future__ import annotations

import re
from functools import lru_cache

from meit.data.scp import SUPERCLASSES, scp_statements, superclasses

from .label_phrases import ABBREVIATIONS, AXIS_PATTERNS, COMMENTS, LOCALISED, LOCATION_KEY, LOCATIONS, PATTERNS

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "å": "a", "ß": "ss", "#": "ue", "’": "'", "–": "-", "—": "-"})
_CLAUSE_SPLIT = re.compile(r"[.;:,\n]|\s{2,}|\b(?:but|however|aber|jedoch|whereas)\b")
_SENTENCE_SPLIT = re.compile(r"[.;:,\n]|\b(?:but|however|aber|jedoch|whereas)\b")
# database artefacts: the "4.46 unbestätigter bericht" footer and annotators' "Edit: ..." notes (they name codes)
_ARTEFACTS = re.compile(rf"\b4\.46\s+unbestaetigter bericht|\bedit:.*$|{COMMENTS}", re.DOTALL)
_HEDGES = re.compile(
    r"can ?not (?:be )?(?:rule[ds]? out|excluded?)|can't rule out|not (?:be )?excluded|"
    r"nicht (?:sicher )?auszuschliessen|nicht ausgeschlossen|kan ej uteslutas"
)
# "no definite evidence to suggest recent ischaemia" puts its "no" beyond the negation window
_NO_EVIDENCE = re.compile(r"\bno (?:definite |ecg |clear )*evidence (?:to suggest|of|for)\b")
_NEG_BEFORE = re.compile(r"\b(?:no|not|without|absent|absence of|negative for|free of|kein\w*|nicht|ohne|denies)\b")
_NEG_AFTER = re.compile(
    r"^\W*(?:is |are |was |were )?(?:absent|not (?:present|seen)|no longer (?:present|seen)|resolved|nicht mehr)\b"
)

# Uncertainty cues -> PTB-XL likelihood (100 stated, 80 probable, 50 possible, 35 questionable). A cue before
# a phrase scopes over it with at most two words between ("possible old inferior infarct"); a cue after it must
# follow directly ("linkshypertrophie möglich", "infarkt wahrscheinlich alt", "myokardskada bör övervägas").
_PRE_CUES = {
    35: r"fraglich\w*|questionabl\w*|equivocal",
    50: r"possibl\w*|verdacht auf|suspect\w*|consider\w*|misstaenkt|moejligen|may be|might be|could be",
    80: r"probabl\w*|likely|sannolik\w*|suggest\w*|wahrscheinlich\w*",
}
_POST_CUES = {
    35: r"fraglich\w*|questionabl\w*",
    50: r"possibl\w*|moeglich\w*|moejligen|boer oevervaegas|misstaenkt|suspected",
    80: r"probabl\w*|wahrscheinlich\w*|likely|sannolik\w*",
}
_CUES = [
    (float(v), re.compile(rf"\b(?:{_PRE_CUES[v]})\W+(?:\w+\W+){{0,2}}$"), re.compile(rf"^\W*(?:{_POST_CUES[v]})\b"))
    for v in (35, 50, 80)
]
# an abbreviation written without a space before the next word ("ventr.extrasystolen") gets one
_ABBREV = re.compile(r"(?<![\w.])(" + "|".join(re.escape(a) for a in ABBREVIATIONS) + r")(?=(\w)?)")
# A German machine report that states a sinus rhythm and nothing abnormal is a normal ECG in PTB-XL's coding
# ("sinusrhythmus lagetyp normal": NORM in 9 of 10 dev rows); what may stand beside it:
_GERMAN_SINUS = re.compile(r"sinus(?:rhythmus|bradykardie|tachykardie| ?arrhythmie)\b")
_BENIGN = frozenset({"SR", "SBRAD", "STACH", "SARRH", "SVARR", "PAC", "LVOLT"})
_NORMAL_VARIANTS = frozenset({"1AVB", "IVCD"})
# read without a code, yet not normal: "unspezifische intraventrikuläre leitungsstörung" (NORM in 9 of 51 dev rows)
_UNCODED = re.compile(r"unspezifisch\w* intraventrikulaer\w* leitungs")
_RESIDUAL_OK = re.compile(r"[\W\d_]+|\b(?:sonst|normal\w*|ekg|und|verdacht|auf|moeglich\w*|wahrscheinlich\w*)\b")
# The machine version that writes "st & t abnormal, wahrscheinlich <wall> ischämie oder linksbelastung" (the other
# writes "abnorm"): PTB-XL codes the wall's ischaemia there without ISC_ (ISC_ in 6 of 99 dev rows, 2/48 and 4/51)
_STT_ABNORMAL = re.compile(r"\bst & t abnormal\b")
_WALL_ISCHAEMIA = frozenset({"ISCAL", "ISCIL", "ISCLA", "ISCAS", "ISCAN", "ISCIN"})
# A cardiologist's German report that states left ventricular hypertrophy and repolarisation changes beside it
# ("sichere lvh st-senkung in v5,6", "linkshypertrophie mit strain"): PTB-XL adds ISC_ (15 of 24 dev rows, 7/12
# and 8/12 by half); the machine's "unspezifische abnorme st-senkung" is NST_, not this
_GERMAN_REPOLARISATION = re.compile(
    r"(?<!unspezifische abnorme )\bst-? ?(?:senkung|hebung)|\bt[- ]?neg\w*|\bneg\. t\b|\bpath\w*\.? repolarisation"
    r"|\b(?:mit|wahrscheinlich) strain\b|\bstrain bei\b"
)
_CUE_SPAN = 40  # characters before a phrase searched for an uncertainty cue
_WINDOW = 60  # characters around an infarct/ischaemia keyword searched for its location words


_Pats = list[tuple[tuple[str, ...], re.Pattern]]


@lru_cache(maxsize=1)
def _compiled() -> tuple[_Pats, re.Pattern, list[tuple[re.Pattern, dict]], _Pats]:
    known = set(scp_statements())
    for codes, _ in PATTERNS + AXIS_PATTERNS:
        unknown = set(codes) - known
        if unknown:
            raise ValueError(f"unknown SCP codes in label patterns: {sorted(unknown)}")
    pats = [(codes, re.compile(pat)) for codes, pat in PATTERNS]
    axis = [(codes, re.compile(pat)) for codes, pat in AXIS_PATTERNS]
    localised = [(re.compile(k), m) for k, m in LOCALISED]
    return pats, re.compile(LOCATIONS), localised, axis


def normalise(text: str) -> str:
    """Lower-case, fold umlauts and dashes, drop database artefacts, turn hedged negations into hedges.

    Runs of two or more spaces are kept: PTB-XL's German and Swedish reports separate statements by them.
    """
    t = _ARTEFACTS.sub(" ", text.lower().translate(_FOLD))
    t = _ABBREV.sub(lambda m: ABBREVIATIONS[m.group(1)] + (" " if m.group(2) else ""), t)
    t = _NO_EVIDENCE.sub("no", t)
    return _HEDGES.sub("possible", t.replace("\t", "  "))


def _negated(clause: str, start: int, end: int) -> bool:
    return bool(_NEG_BEFORE.search(clause[max(0, start - 30) : start]) or _NEG_AFTER.search(clause[end:]))


def _likelihood(clause: str, start: int, end: int) -> float:
    """PTB-XL likelihood of a phrase from the uncertainty cues around it in its clause."""
    before, after = clause[max(0, start - _CUE_SPAN) : start], clause[end : end + _CUE_SPAN]
    return next((v for v, pre, post in _CUES if pre.search(before) or post.search(after)), 100.0)


def _add(found: dict[str, float], codes: tuple[str, ...] | set[str], likelihood: float) -> None:
    for code in codes:
        found[code] = max(found.get(code, 0.0), likelihood)


def _mask(clause: str, start: int, end: int) -> str:
    return clause[:start] + "_" * (end - start) + clause[end:]  # a word: cues do not reach across it


def _locations(clause: str, lo: int, hi: int) -> list[tuple[int, int, str]]:
    loc_re = _compiled()[1]
    return [(m.start(), m.end(), LOCATION_KEY[m.group(0).replace("-", "")]) for m in loc_re.finditer(clause, lo, hi)]


def _codes(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else value


def _localised(clause: str) -> tuple[dict[str, float], str]:
    """Infarct / injury / ischaemia codes: every location word just before the keyword (or else just after)."""
    found: dict[str, float] = {}
    for key_re, mapping in _compiled()[2]:
        prev_end = 0
        for m in list(key_re.finditer(clause)):
            if _negated(clause, m.start(), m.end()):
                clause = _mask(clause, m.start(), m.end())
                continue
            before = _locations(clause, max(prev_end, m.start() - _WINDOW), m.start())
            after = _locations(clause, m.end(), min(len(clause), m.end() + _WINDOW))
            chosen = before or after[:1]
            codes = {c for _, _, k in chosen if k in mapping for c in _codes(mapping[k])}
            if not chosen and None in mapping:
                codes = set(_codes(mapping[None]))
            _add(found, codes, _likelihood(clause, min([m.start()] + [a for a, _, _ in chosen]), m.end()))
            for a, b, k in chosen:
                if k in mapping:  # a wall this keyword does not code stays for the next keyword
                    clause = _mask(clause, a, b)
            clause = _mask(clause, m.start(), m.end())
            prev_end = m.end()
    return found, clause


def _match_table(clause: str, table: _Pats, found: dict[str, float]) -> str:
    """Add the codes of every phrase of ``table`` in ``clause``; returns the clause with the phrases masked."""
    for codes, pat in table:
        for m in list(pat.finditer(clause)):
            if not _negated(clause, m.start(), m.end()):
                _add(found, codes, _likelihood(clause, m.start(), m.end()))
            clause = _mask(clause, m.start(), m.end())
    return clause


def _clause_labels(clause: str, axis: dict[str, float]) -> tuple[dict[str, float], str]:
    """Codes of one statement (axis-derived ones go to ``axis``) and what of it no phrase read."""
    found, clause = _localised(clause)
    clause = _match_table(clause, _compiled()[0], found)
    return found, _match_table(clause, _compiled()[3], axis)


def _combine_locations(found: dict[str, float]) -> None:
    """Infarcts of two walls stated apart as PTB-XL codes them: an inferior and a (antero)lateral one are one
    inferolateral infarct (ILMI in 20 of the 26 German dev rows with "anterolateraler infarkt" and "inferiorer
    infarkt"); an anterior and a lateral one add the anterolateral infarct."""
    lateral = [c for c in ("ALMI", "LMI") if c in found]
    if "IMI" in found and lateral:
        _add(found, ("ILMI",), max(found.pop(c) for c in ["IMI", *lateral]))
    # an anterior(-septal) and a lateral infarct are an anterolateral one, coded beside both (ALMI in 7 of the 16
    # dev rows with both, 3/7 and 4/9 by half; ASMI in 13, LMI in 6)
    if "ASMI" in found and "LMI" in found:
        _add(found, ("ALMI",), min(found["ASMI"], found["LMI"]))


def extract_label_likelihoods(text: str) -> dict[str, float]:
    """SCP codes stated (and not negated) in a report, each with a likelihood on PTB-XL's scale.

    100: stated; 80: "probable", "wahrscheinlich", "suggesting"; 50: "possible", "möglich", "verdacht auf",
    "cannot be excluded", "bör övervägas"; 35: "fraglich", "questionable". A code stated several times keeps
    its highest likelihood.

    Args:
        text: A report in English (PTB-XL, MIMIC-IV-ECG machine statements), German or Swedish, as the
            loaders return it.

    Returns:
        ``{code: likelihood}``; empty for an empty report.
    """
    found: dict[str, float] = {}
    if not text or not text.strip():
        return found
    norm = normalise(text)
    # runs of spaces separate statements in the machine reports; in written sentences they are only line wraps
    splitter = _SENTENCE_SPLIT if re.search(r"[a-z]\. [a-z(]", norm) else _CLAUSE_SPLIT
    axis: dict[str, float] = {}
    unread = []
    for clause in splitter.split(norm):
        if clause and clause.strip():
            codes, rest = _clause_labels(re.sub(r"\s+", " ", clause), axis)
            for code, likelihood in codes.items():
                _add(found, (code,), likelihood)
            unread.append(_RESIDUAL_OK.sub("", rest))
    if {"CLBBB", "ILBBB"} & set(found):  # the left axis of a left bundle branch block is no fascicular block
        axis.pop("LAFB", None)
    if "NORM" not in found:  # an axis stated beside "normal ECG" is a normal variant, not a fascicular block
        for code, likelihood in axis.items():
            _add(found, (code,), likelihood)
    benign = found and set(found) <= _BENIGN and not _UNCODED.search(norm)
    if _GERMAN_SINUS.search(norm) and not any(unread) and benign:
        found["NORM"] = 100.0
    _combine_locations(found)
    if "LVH" in found and "ISC_" not in found and _GERMAN_REPOLARISATION.search(norm):
        found["ISC_"] = found["LVH"]
    if _STT_ABNORMAL.search(norm) and _WALL_ISCHAEMIA & set(found):
        found.pop("ISC_", None)
    # a stated "normal ECG" stands beside a first-degree AV block or an intraventricular conduction delay
    # (PTB-XL keeps NORM in 16 of the 22 dev rows that say both), not beside other diagnostic codes
    if "NORM" in found and set(superclasses(set(found) - _NORMAL_VARIANTS)) - {"NORM"}:
        del found["NORM"]
    if "CLBBB" in found and found.get("LVH", 100.0) < 100:
        # a hedged LVH beside LBBB ("linkshypertrophie möglich"): PTB-XL codes it in under a tenth of such rows
        found = {c: v for c, v in found.items() if c not in ("LVH", "VCLVH")}
    return found


def extract_labels(text: str) -> set[str]:
    """SCP-ECG statement codes stated (and not negated) in a report, hedged ones included.

    Every PTB-XL code counts as present whatever its likelihood (the ``labels_true`` convention), so a
    hedged phrase ("possible anterior infarct") gives its code too; see :func:`extract_label_likelihoods`.

    Args:
        text: A report in English (PTB-XL, MIMIC-IV-ECG machine statements), German or Swedish, as the
            loaders return it; empty gives an empty set.

    Returns:
        The set of SCP codes (keys of ``meit.data.scp.scp_statements()``).
    """
    return set(extract_label_likelihoods(text))


def extract_superclasses(text: str) -> set[str]:
    """Diagnostic superclasses (NORM, MI, STTC, CD, HYP) of the statements in a report."""
    return set(superclasses(extract_labels(text)))


__all__ = ["SUPERCLASSES", "extract_label_likelihoods", "extract_labels", "extract_superclasses", "normalise"]
