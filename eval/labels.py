"""Rule-based extraction of PTB-XL SCP-ECG statements (71 codes) from report text.

Design choices (see also docs/METRICS.md):

* **Languages.** English (PTB-XL English reports, MIMIC-IV-ECG machine statements, the
  synthetic report styles) and the standard PTB-XL German machine phrases. Text is
  lower-cased and umlauts are folded (ä -> ae, ö -> oe, ü -> ue, ß -> ss), so "überdrehter"
  and "ueberdrehter" read the same.
* **Clauses and negation.** Text is split into clauses at ``. ; : , \\n`` and at "but",
  "however", "aber", "jedoch". A finding is dropped when a negation cue precedes it in its
  clause ("no", "not", "without", "absent", "negative for", "free of", "kein/keine/keiner",
  "nicht", "ohne") or follows it directly ("... absent", "... no longer present", "nicht mehr").
  "cannot rule out" / "nicht ausgeschlossen" are hedges, not negations.
* **Hedges count.** "possible", "probable", "consider", "cannot rule out" findings are
  extracted (PTB-XL codes such statements too, with a lower likelihood).
* **Most specific first.** Patterns run in a fixed order and every match masks its span, so
  "incomplete right bundle branch block" gives IRBBB and not also CRBBB, and "ventricular
  premature complexes" gives PVC, not also the generic PRC(S).
* **Localised statements.** Infarction (IMI, ASMI, AMI, ALMI, ILMI, IPLMI, IPMI, LMI, PMI),
  ischaemia (ISCAL, ISCAS, ISCAN, ISCIN, ISCIL, ISCLA, else ISC_) and subendocardial injury
  (INJAS, INJAL, INJIN, INJLA, INJIL) take the location word nearest to the keyword in the
  same clause. An infarction without a location gives no code.
* **Implications.** "prolonged PR interval" gives LPR and 1AVB (the synthetic reports and
  MIMIC use it for first-degree AV block); "voltage criteria for LVH" gives VCLVH and LVH;
  "minimal voltage criteria" gives VCLVH only.
* **NORM** only from explicit statements ("normal ECG", "normales EKG", "within normal
  limits", "otherwise normal ECG") and only when no code of another diagnostic superclass
  (MI, STTC, CD, HYP) is found. PTB-XL's annotators also gave NORM to reports that never say
  so (ecg_id 1, "sinusrhythmus periphere niederspannung", is NORM/LVOLT/SR); the extractor
  reads text, so that report gives {SR, LVOLT}. Axis statements ("linkstyp", "überdrehter
  linkstyp", "left axis deviation") and "abnormal/borderline ECG" have no SCP code and give none.
"""

from __future__ import annotations

import re
from functools import lru_cache

from meit.scp import SUPERCLASSES, scp_statements, superclasses

from .label_phrases import LOCALISED, LOCATION_KEY, LOCATIONS, PATTERNS

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "å": "a", "ß": "ss", "#": "ue", "’": "'", "–": "-", "—": "-"})
_CLAUSE_SPLIT = re.compile(r"[.;:,\n]|\s{2,}|\b(?:but|however|aber|jedoch|whereas)\b")
# database artefacts: the "4.46 unbestätigter bericht" footer and annotators' "Edit: ..." notes (they name codes)
_ARTEFACTS = re.compile(r"\b4\.46\s+unbestaetigter bericht|\bedit:.*$", re.DOTALL)
_HEDGES = re.compile(
    r"can ?not (?:be )?(?:rule[ds]? out|excluded?)|can't rule out|not (?:be )?excluded|"
    r"nicht (?:sicher )?auszuschliessen|nicht ausgeschlossen|kan ej uteslutas"
)
_NEG_BEFORE = re.compile(r"\b(?:no|not|without|absent|absence of|negative for|free of|kein\w*|nicht|ohne|denies)\b")
_NEG_AFTER = re.compile(
    r"^\W*(?:is |are |was |were )?(?:absent|not (?:present|seen)|no longer (?:present|seen)|resolved|nicht mehr)\b"
)

_WINDOW = 60  # characters around an infarct/ischaemia keyword searched for its location words


@lru_cache(maxsize=1)
def _compiled() -> tuple[list[tuple[tuple[str, ...], re.Pattern]], re.Pattern, list[tuple[re.Pattern, dict]]]:
    known = set(scp_statements())
    pats = []
    for codes, pat in PATTERNS:
        unknown = set(codes) - known
        if unknown:
            raise ValueError(f"unknown SCP codes in label patterns: {sorted(unknown)}")
        pats.append((codes, re.compile(pat)))
    localised = [(re.compile(k), m) for k, m in LOCALISED]
    return pats, re.compile(LOCATIONS), localised


def normalise(text: str) -> str:
    """Lower-case, fold umlauts and dashes, drop database artefacts, turn hedged negations into hedges.

    Runs of two or more spaces are kept: PTB-XL's German and Swedish reports separate statements by them.
    """
    t = _ARTEFACTS.sub(" ", text.lower().translate(_FOLD))
    return _HEDGES.sub("possible", t.replace("\t", "  "))


def _negated(clause: str, start: int, end: int) -> bool:
    return bool(_NEG_BEFORE.search(clause[max(0, start - 30) : start]) or _NEG_AFTER.search(clause[end:]))


def _mask(clause: str, start: int, end: int) -> str:
    return clause[:start] + "#" * (end - start) + clause[end:]


def _locations(clause: str, lo: int, hi: int) -> list[tuple[int, int, str]]:
    loc_re = _compiled()[1]
    return [(m.start(), m.end(), LOCATION_KEY[m.group(0).replace("-", "")]) for m in loc_re.finditer(clause, lo, hi)]


def _localised(clause: str) -> tuple[set[str], str]:
    """Infarct / injury / ischaemia codes: every location word just before the keyword (or else just after)."""
    found: set[str] = set()
    for key_re, mapping in _compiled()[2]:
        prev_end = 0
        for m in list(key_re.finditer(clause)):
            if _negated(clause, m.start(), m.end()):
                clause = _mask(clause, m.start(), m.end())
                continue
            before = _locations(clause, max(prev_end, m.start() - _WINDOW), m.start())
            after = _locations(clause, m.end(), min(len(clause), m.end() + _WINDOW))
            chosen = before or after[:1]
            codes = {mapping[k] for _, _, k in chosen if k in mapping}
            if not codes and None in mapping:
                codes = {mapping[None]}
            found |= codes
            for a, b, _ in chosen:
                clause = _mask(clause, a, b)
            clause = _mask(clause, m.start(), m.end())
            prev_end = m.end()
    return found, clause


def _clause_labels(clause: str) -> set[str]:
    found, clause = _localised(clause)
    for codes, pat in _compiled()[0]:
        for m in list(pat.finditer(clause)):
            if not _negated(clause, m.start(), m.end()):
                found.update(codes)
            clause = _mask(clause, m.start(), m.end())
    return found


def extract_labels(text: str) -> set[str]:
    """SCP-ECG statement codes stated (and not negated) in a report.

    Args:
        text: A report in English (PTB-XL, MIMIC-IV-ECG machine statements), German or Swedish, as the
            loaders return it; empty gives an empty set.

    Returns:
        The set of SCP codes (keys of ``meit.scp.scp_statements()``).
    """
    if not text or not text.strip():
        return set()
    found: set[str] = set()
    for clause in _CLAUSE_SPLIT.split(normalise(text)):
        if clause and clause.strip():
            found |= _clause_labels(re.sub(r"\s+", " ", clause))
    if "NORM" in found and set(superclasses(found)) - {"NORM"}:
        found.discard("NORM")
    if "CLBBB" in found:  # LBBB hides hypertrophy: PTB-XL does not code LVH beside it (docs/METRICS.md)
        found -= {"LVH", "VCLVH"}
    return found


def extract_superclasses(text: str) -> set[str]:
    """Diagnostic superclasses (NORM, MI, STTC, CD, HYP) of the statements in a report."""
    return set(superclasses(extract_labels(text)))


__all__ = ["SUPERCLASSES", "extract_labels", "extract_superclasses", "normalise"]
