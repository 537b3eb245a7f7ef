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

_FOLD = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "’": "'", "–": "-", "—": "-"})
_CLAUSE_SPLIT = re.compile(r"[.;:,\n]|\b(?:but|however|aber|jedoch|whereas)\b")
_HEDGES = re.compile(
    r"can ?not (?:be )?(?:rule[ds]? out|excluded?)|can't rule out|not (?:be )?excluded|"
    r"nicht (?:sicher )?auszuschliessen|nicht ausgeschlossen"
)
_NEG_BEFORE = re.compile(r"\b(?:no|not|without|absent|absence of|negative for|free of|kein\w*|nicht|ohne|denies)\b")
_NEG_AFTER = re.compile(
    r"^\W*(?:is |are |was |were )?(?:absent|not (?:present|seen)|no longer (?:present|seen)|resolved|nicht mehr)\b"
)

_AV = r"(?:av|a-v|atrioventricular|atrio-ventricular)"
_T = r"t[- ]?(?:wave|welle|zacke)?s?"
_ST = r"st[- ]?(?:segment|strecken)?[- ]?"

# (codes, pattern), most specific first. Patterns see lower-case, umlaut-folded text.
_PATTERNS: list[tuple[tuple[str, ...], str]] = [
    (
        ("NORM",),
        r"\bnormal(?:es)? (?:ruhe-?)?(?:ecg|ekg|electrocardiogram|tracing)\b|within normal limits"
        r"|\bnormalbefund\b|\bnormal-?ekg\b",
    ),
    # rhythm
    (("PSVT",), r"paroxysmal\w* supraventri\w* tachy\w*|\bpsvt\b"),
    (("SVTAC",), r"supraventri\w* tachy\w*|\bsvt\b"),
    (("SVARR",), r"supraventri\w* arrh?ythmi\w*"),
    (("AFLT",), r"atrial flutter|vorhofflattern|\bflutter\b"),
    (("AFIB",), r"atrial fibrillation|vorhofflimmern|\ba-?fib\b|\baf\b"),
    (("STACH",), r"sinus ?tach[yi]\w*|sinustachykardie"),
    (("SBRAD",), r"sinus ?brad[yi]\w*|sinusbradykardie"),
    (("SARRH",), r"sinus ?arr?h?ythmi\w*"),
    (("SR",), r"sinus ?rh?ythm\w*|\bnsr\b"),
    (("PACE",), r"pacemaker|schrittmacher|\bpaced\b|\bpacing\b|\bpacer\b"),
    (("BIGU",), r"bigemin\w*"),
    (("TRIGU",), r"trigemin\w*"),
    # conduction
    (
        ("3AVB",),
        rf"(?:third|3rd|3\.?)[- ]degree {_AV}[- ]block|complete (?:{_AV}|heart) block"
        r"|av[- ]block (?:iii|3)\b|(?:totaler|kompletter|drittgradiger) av[- ]block",
    ),
    (
        ("2AVB",),
        rf"(?:second|2nd|2\.?)[- ]degree {_AV}[- ]block|mobitz|wenckebach|av[- ]block (?:ii|2)\b"
        r"|zweitgradiger av[- ]block|\d:\d av[- ]block",
    ),
    (
        ("1AVB",),
        rf"(?:first|1st|1\.?)[- ]degree {_AV}[- ]block|av[- ]block (?:i|1)\b|erstgradiger av[- ]block"
        r"|\b1avb\b",
    ),
    (
        ("1AVB", "LPR"),
        r"(?:prolonged|long|lengthened) (?:pr|pq)\b(?: interval)?|(?:pr|pq)(?: interval)? (?:is )?prolong\w*"
        r"|(?:pq|pr)[- ]?(?:zeit[- ]?)?verlaengerung|verlaengerte (?:pq|pr)\w*",
    ),
    (("WPW",), r"wolf+[- ]parkinson[- ]white|\bwpw\b|pre-?excitation|praeexzitation"),
    (("ILBBB",), r"incomplete left bundle[- ]branch block|inkomplett\w* linksschenkelblock|\bilbbb\b"),
    (("IRBBB",), r"incomplete right bundle[- ]branch block|inkomplett\w* rechtsschenkelblock|\birbbb\b"),
    (("CLBBB",), r"left bundle[- ]branch block|linksschenkelblock|\bc?lbbb\b"),
    (("CRBBB",), r"right bundle[- ]branch block|rechtsschenkelblock|\bc?rbbb\b"),
    (
        ("LAFB",),
        r"left anterior (?:fascicular|hemi-?) ?block|left anterior hemiblock|linksanterior\w* hemiblock"
        r"|\blafb\b|\blahb\b",
    ),
    (
        ("LPFB",),
        r"left posterior (?:fascicular|hemi-?) ?block|left posterior hemiblock|linksposterior\w* hemiblock"
        r"|\blpfb\b|\blphb\b",
    ),
    (
        ("IVCD",),
        r"intraventricular conduction (?:delay|defect|disturbance|abnormality)|\bivcd\b"
        r"|intraventrikulaer\w* (?:erregungs)?(?:leitungs|ausbreitungs)\w*",
    ),
    # hypertrophy / atrial
    (("VCLVH",), r"(?:minimal|borderline|grenzwertig\w*) voltage criteria for (?:left ventricular hypertrophy|lvh)"),
    (("VCLVH", "LVH"), r"voltage criteria for (?:left ventricular hypertrophy|lvh)|\bvclvh\b"),
    (
        ("LVH",),
        r"left ventricular hypertrophy|\blvh\b|linksherzhypertrophie|linksventrikulaer\w* hypertrophie"
        r"|hypertrophie des linken ventrikels",
    ),
    (("RVH",), r"right ventricular hypertrophy|\brvh\b|rechtsherzhypertrophie|rechtsventrikulaer\w* hypertrophie"),
    (("SEHYP",), r"septal hypertrophy|septumhypertrophie"),
    (
        ("LAO/LAE",),
        r"left atrial (?:enlargement|abnormality|overload|hypertrophy|dilat\w*)|\blae\b|p[- ]?sinistro\w*"
        r"|linksatrial\w*|linksvorhof\w*|p[- ]mitrale",
    ),
    (
        ("RAO/RAE",),
        r"right atrial (?:enlargement|abnormality|overload|hypertrophy|dilat\w*)|\brae\b|p[- ]?dextro\w*"
        r"|rechtsatrial\w*|rechtsvorhof\w*|p[- ]pulmonale",
    ),
    # ST-T and QRS form statements
    (("ANEUR",), r"aneurysm\w*"),
    (("DIG",), r"digitalis\w*|digoxin|\bdig effect"),
    (("EL",), r"electrolyte\w*|elektrolyt\w*|hyperkal\w*|hypokal\w*|drug effect"),
    (
        ("LNGQT",),
        r"(?:prolonged|long|lengthened) qtc?\b|qtc?(?: interval)? (?:is )?prolong\w*|qtc?[- ]?(?:zeit[- ]?)?"
        r"verlaengerung|verlaengerte qt\w*|long qt",
    ),
    (("STE_",), rf"{_ST}elevat\w*|{_ST}hebung\w*|elevated st\b|st[- ]?strecken-?hebung\w*|\bstemi\b"),
    (("STD_",), rf"{_ST}depress\w*|{_ST}senkung\w*|depressed st\b|st[- ]?strecken-?senkung\w*"),
    (
        ("INVT",),
        rf"{_T} inversion\w*|inverted {_T}|{_T}[- ]?inversion|negative {_T}|t[- ]?negativierung\w*"
        r"|negativ\w* t[- ]?(?:welle|zacke)\w*|t[- ]?wave inversions?",
    ),
    (
        ("LOWT",),
        rf"low[- ]amplitude {_T}|flat(?:tened)? {_T}|{_T} flattening|t[- ]?abflachung\w*|abgeflacht\w* t\b"
        rf"|flache t\b|low {_T}",
    ),
    (
        ("NST_",),
        r"(?:non-?specific|unspezifisch\w*) st(?:[- ]?t)?(?:[- ]?wave)?(?:[- ]?segment)? (?:changes?|abnormalit\w*"
        r"|veraenderung\w*)|st[- ]?t[- ]?(?:wave )?(?:changes?|abnormalit\w*)|st[- ]?(?:t[- ]?)?veraenderung\w*"
        r"|\bst changes?\b|\bnsst",
    ),
    (("NDT",), r"non-?diagnostic t"),
    (
        ("NT_",),
        rf"(?:non-?specific|unspezifisch\w*) {_T}(?: changes?| abnormalit\w*| veraenderung\w*)?"
        rf"|{_T} changes?|t[- ]?(?:wellen)?veraenderung\w*",
    ),
    (("TAB_",), rf"{_T} abnormalit\w*|abnormal {_T}"),
    (("QWAVE",), r"\bq[- ]?waves?\b|\bq[- ]?zacke\w*|pathologisch\w* q\b"),
    (("ABQRS",), r"abnormal qrs|qrs abnormalit\w*|qrs[- ]?(?:deformierung|veraenderung)\w*"),
    (("HVOLT",), r"high (?:qrs )?voltage\w*|hohe (?:qrs[- ])?amplitude\w*|hochvolt\w*"),
    (("LVOLT",), r"low (?:qrs )?voltage\w*|low qrs\b|niederspannung|niedervolt\w*|niedrige (?:qrs[- ])?amplitude\w*"),
    (
        ("PVC",),
        r"ventricular (?:premature|extra)\w* (?:complex|contraction|beat|systole|depolari[sz]ation)\w*"
        r"|premature ventricular (?:complex|contraction|beat|depolari[sz]ation)\w*|ventricular extrasystol\w*"
        r"|\bpvcs?\b|\bvpcs?\b|ventrikulaer\w* extrasystol\w*|\bves\b",
    ),
    (
        ("PAC",),
        r"(?:atrial|supraventricular) (?:premature|extra)\w* (?:complex|contraction|beat|systole)\w*"
        r"|premature (?:atrial|supraventricular) (?:complex|contraction|beat)\w*|(?:atrial|supraventricular) "
        r"extrasystol\w*|\bpacs\b|\bapcs?\b|supraventrikulaer\w* extrasystol\w*|vorhofextrasystol\w*|\bsves\b",
    ),
    (("PRC(S)",), r"premature (?:complex|beat|contraction)\w*|extrasystol\w*|ectopic beats?|ektop\w* schlaeg\w*"),
]

_LOC = (
    r"infero-?postero-?lateral|infero-?posterior|infero-?lateral|antero-?lateral|antero-?septal|anterior|inferior"
    r"|lateral|posterior|septal|vorderwand-?seitenwand|hinterwand-?seitenwand|vorderwand|hinterwand|seitenwand|septum"
)
_LOC_KEY = {
    "inferoposterolateral": "IPL",
    "inferoposterior": "IP",
    "inferolateral": "IL",
    "hinterwandseitenwand": "IL",
    "anterolateral": "AL",
    "vorderwandseitenwand": "AL",
    "anteroseptal": "AS",
    "septal": "AS",
    "septum": "AS",
    "anterior": "AN",
    "vorderwand": "AN",
    "inferior": "IN",
    "hinterwand": "IN",
    "lateral": "LA",
    "seitenwand": "LA",
    "posterior": "P",
}
_LOCALISED = [
    (
        r"infar[ck]t\w*|\bmi\b|\bstemi\b|nekrose|narbe",
        {
            "IPL": "IPLMI",
            "IP": "IPMI",
            "IL": "ILMI",
            "AL": "ALMI",
            "AS": "ASMI",
            "AN": "AMI",
            "IN": "IMI",
            "LA": "LMI",
            "P": "PMI",
        },
    ),
    (
        r"subendocardial injury|subendokardial\w* (?:schaedigung|laesion|verletzung)|\binjury\b",
        {"AS": "INJAS", "AN": "INJAS", "AL": "INJAL", "IN": "INJIN", "IL": "INJIL", "LA": "INJLA"},
    ),
    (
        r"(?:isch(?:a)?emi\w*|ischem\w*)(?: st(?:[- ]?t)?(?:[- ]?wave)? (?:changes?|abnormalit\w*|depression))?",
        {"AL": "ISCAL", "AS": "ISCAS", "AN": "ISCAN", "IN": "ISCIN", "IL": "ISCIL", "LA": "ISCLA", None: "ISC_"},
    ),
]


@lru_cache(maxsize=1)
def _compiled() -> tuple[list[tuple[tuple[str, ...], re.Pattern]], re.Pattern, list[tuple[re.Pattern, dict]]]:
    known = set(scp_statements())
    pats = []
    for codes, pat in _PATTERNS:
        unknown = set(codes) - known
        if unknown:
            raise ValueError(f"unknown SCP codes in label patterns: {sorted(unknown)}")
        pats.append((codes, re.compile(pat)))
    localised = [(re.compile(k), m) for k, m in _LOCALISED]
    return pats, re.compile(_LOC), localised


def normalise(text: str) -> str:
    """Lower-case, fold umlauts and dashes, collapse whitespace, turn hedged negations into hedges."""
    t = re.sub(r"[ \t]+", " ", text.lower().translate(_FOLD))
    return _HEDGES.sub("possible", t)


def _negated(clause: str, start: int, end: int) -> bool:
    return bool(_NEG_BEFORE.search(clause[:start]) or _NEG_AFTER.search(clause[end:]))


def _mask(clause: str, start: int, end: int) -> str:
    return clause[:start] + "#" * (end - start) + clause[end:]


def _localised(clause: str) -> tuple[set[str], str]:
    found: set[str] = set()
    _, loc_re, localised = _compiled()
    locs = [(m.start(), _LOC_KEY[m.group(0).replace("-", "")]) for m in loc_re.finditer(clause)]
    for key_re, mapping in localised:
        for m in key_re.finditer(clause):
            if _negated(clause, m.start(), m.end()):
                clause = _mask(clause, m.start(), m.end())
                continue
            near = sorted(locs, key=lambda p: abs(p[0] - m.start()))
            code = next((mapping[k] for _, k in near if k in mapping), mapping.get(None))
            if code:
                found.add(code)
            clause = _mask(clause, m.start(), m.end())
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
        text: A report in English or PTB-XL German machine phrasing; empty gives an empty set.

    Returns:
        The set of SCP codes (keys of ``meit.scp.scp_statements()``).
    """
    if not text or not text.strip():
        return set()
    found: set[str] = set()
    for clause in _CLAUSE_SPLIT.split(normalise(text)):
        if clause and clause.strip():
            found |= _clause_labels(clause)
    if "NORM" in found and set(superclasses(found)) - {"NORM"}:
        found.discard("NORM")
    return found


def extract_superclasses(text: str) -> set[str]:
    """Diagnostic superclasses (NORM, MI, STTC, CD, HYP) of the statements in a report."""
    return set(superclasses(extract_labels(text)))


__all__ = ["SUPERCLASSES", "extract_labels", "extract_superclasses", "normalise"]
